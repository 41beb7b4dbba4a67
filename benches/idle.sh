#!/usr/bin/env bash
# Issue 12's idle memory and unchanged re-scan at 100,000 files in 2,000 folders, in parts,
# so that builds are compared on the same data against the same server (one test server
# kept running across the parts: its inventory lives in memory). Not a test.
#
# usage:
#   benches/idle.sh setup DIR [N FOLDERS]   generate N files (100000) in FOLDERS folders
#        (2000) under DIR (benches/run.sh's generator), start a release test server (kept
#        running, its pid in DIR/server.pid), back them up with a first `scan`, pull, and
#        make the backup an hour old (`POST /__admin/actions/backdate`): the steady state
#   benches/idle.sh idle DIR BIN SECS [LABEL]   `BIN run` for SECS seconds; every 10 s its
#        VmRSS and VmHWM; at the end /proc/PID/smaps_rollup, the largest mappings of smaps
#        and the thread count (to DIR/idle-LABEL.*). Environment passes through (e.g.
#        MALLOC_ARENA_MAX=2).
#   benches/idle.sh rescan DIR REPS BIN...   REPS rounds, each: every BIN's `scan`, then
#        `find -printf '%p %s %T@ %i\n'`, wall and CPU (`/usr/bin/time`), peak RSS
#   benches/idle.sh stop DIR                 stop the test server
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
TARGET=${CARGO_TARGET_DIR:-target}
SRV=$TARGET/release/immish-testserver

cmd=${1:?usage: see the top of benches/idle.sh}
WORK=${2:?DIR}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

load() { cut -d' ' -f1-3 /proc/loadavg; }

case $cmd in
  setup)
    n=${3:-100000} folders=${4:-2000}
    gen_files "$WORK/photos" "$n" 200 1200 "$folders"
    find "$WORK/photos" -type f -print0 | xargs -0 cat > /dev/null
    # Started outside lib.sh's trap: the server outlives this script.
    (setsid "$SRV" --port 0 > "$WORK/server.out" 2> /dev/null & echo $! > "$WORK/server.pid")
    for _ in $(seq 100); do grep -q '^api key:' "$WORK/server.out" 2> /dev/null && break; sleep 0.05; done
    KEY=$(sed -n 's/^api key: //p' "$WORK/server.out")
    PORT=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$WORK/server.out")
    bench_write_config "$WORK" "$WORK/photos" "$WORK/state"
    echo "first scan of $n files" >&2
    /usr/bin/time -f '%e s %M KiB' "$TARGET/release/immish-sync" --config "$WORK/config.toml" scan > "$WORK/setup.log" 2>&1
    # The mirror's first (full) pull, then the backdate: later pulls list nothing.
    "$TARGET/release/immish-sync" --config "$WORK/config.toml" scan >> "$WORK/setup.log" 2>&1
    curl -sf -X POST -H 'content-type: application/json' -d '{"seconds": 3600}' \
      "http://127.0.0.1:$PORT/__admin/actions/backdate"
    echo
    "$TARGET/release/immish-sync" --config "$WORK/config.toml" scan >> "$WORK/setup.log" 2>&1
    tail -3 "$WORK/setup.log"
    ;;
  idle)
    bin=${3:?BIN} secs=${4:?SECS} label=${5:-$(basename "$bin")}
    out=$WORK/idle-$label
    echo "idle $label: $secs s, load $(load)" | tee "$out.txt"
    "$bin" --config "$WORK/config.toml" run > "$out.log" 2>&1 &
    pid=$!
    t=0
    while [ $t -lt "$secs" ]; do
      sleep 10; t=$((t + 10))
      kill -0 $pid 2> /dev/null || { echo "run ended" >&2; break; }
      printf '%4d s  rss %6d KiB  hwm %6d KiB  threads %s  cpu %s ticks  load %s\n' $t \
        "$(awk '/VmRSS/ {print $2}' /proc/$pid/status)" "$(awk '/VmHWM/ {print $2}' /proc/$pid/status)" \
        "$(awk '/Threads/ {print $2}' /proc/$pid/status)" "$(awk '{print $14 + $15}' /proc/$pid/stat)" \
        "$(load)" | tee -a "$out.txt"
    done
    cat /proc/$pid/smaps_rollup > "$out.rollup"
    cp /proc/$pid/smaps "$out.smaps"
    ls /proc/$pid/task | wc -l > "$out.threads"
    grep -E 'Rss|Pss_Anon|Pss_File|Anonymous' "$out.rollup" | tee -a "$out.txt"
    # The largest mappings by Rss.
    awk '/^[0-9a-f]+-[0-9a-f]+ / {m = $0} /^Rss:/ {print $2, m}' "$out.smaps" | sort -rn | head -12 | tee -a "$out.txt"
    kill -TERM $pid; wait $pid || true
    ;;
  rescan)
    reps=${3:?REPS}; shift 3
    KEYS=$(awk -F'"' '/api_key/ {print $2}' "$WORK/config.toml")
    echo "rescan: load $(load)"
    for i in $(seq "$reps"); do
      for bin in "$@"; do
        /usr/bin/time -f "%e s wall %U user %S sys %M KiB" -o "$WORK/time.out" \
          "$bin" --config "$WORK/config.toml" scan > "$WORK/rescan.log" 2>&1 || { tail "$WORK/rescan.log"; exit 1; }
        printf 'round %d %-40s %s  %s\n' "$i" "$bin" "$(cat "$WORK/time.out")" \
          "$(grep -o '([0-9,]* new or changed)' "$WORK/rescan.log" | head -1 || true)"
      done
      /usr/bin/time -f "%e s wall %U user %S sys %M KiB" -o "$WORK/time.out" \
        find "$WORK/photos" -printf '%p %s %T@ %i\n' > /dev/null
      printf 'round %d %-40s %s\n' "$i" find "$(cat "$WORK/time.out")"
    done
    echo "load $(load)"
    ;;
  stop)
    kill "$(cat "$WORK/server.pid")"
    ;;
  *) echo "unknown part $cmd" >&2; exit 2 ;;
esac
