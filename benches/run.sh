#!/usr/bin/env bash
# The performance goals of issue 12 in one command: each of immish-sync's figures beside its
# floor, measured in the same run, on the same data, against the same kind of server (the
# in-repo test server, a fresh one for every upload so that nothing is a duplicate), with
# release builds and a warm page cache. Prints a table of ratios (medians of REPS runs) and
# writes it to $BENCH_DIR/results.txt. Not a test: nothing here passes or fails.
#
# usage: benches/run.sh [--quick] [--small] [--large] [--million]
#   --quick    (the default) 2,000 files of 50-500 KiB and 10,000 of 1-4 KiB: first scans
#              and the re-scan of the 2,000; SHA-1 on one core and on two; one 1 GiB upload
#   --small    only the 10,000 files of 1-4 KiB of --quick (first scan and re-scan)
#   --large    also 100,000 files of 0.2-1.2 KiB in 2,000 folders: first scan, unchanged
#              re-scan (straight after the backup, and with the backup made an hour old),
#              `run` idle (peak RSS, start-up), state database bytes per file
#   --million  also 1,000,000 files of that kind in 10,000 folders (about 4 GB of disk,
#              ~20 minutes)
#   --no-build use the release binaries already in target/ as they are
#   --no-quick leave out the quick part (with --large or --million: only the many files)
# environment (all optional):
#   BENCH_DIR  where the data goes (default: a new directory under /tmp, removed at the end;
#              a given one is kept, and data already there is reused)
#   REPS       runs per figure, the median is shown (default 3)
#   N_BIG N_SMALL N_LARGE N_HUGE   file counts (2000, 10000, 100000, 1000000)
#   HASH_MIB   size of each hashed file and of the single upload (default 1024)
#   IMMISH_SYNC_BIN  the daemon binary to measure (default: the release build of this tree)
#
# The floors: `sha1sum` (2 processes) and `curl --parallel --parallel-max 8` (one request per
# file, the daemon's form fields) for first scans; `find -printf '%p %s %T@ %i\n'` for
# re-scans; `openssl dgst -sha1` for hashing; `curl -F` for one large upload.
set -euo pipefail
cd "$(dirname "$0")/.."

LARGE=0 MILLION=0 BUILD=1 QUICK=1 SMALL=0
for a in "$@"; do
  case $a in
    --quick) ;;
    --small) SMALL=1 QUICK=0 ;;
    --no-build) BUILD=0 ;;
    --no-quick) QUICK=0 ;;
    --large) LARGE=1 ;;
    --million) MILLION=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $a (see --help)" >&2; exit 2 ;;
  esac
done
REPS=${REPS:-3}
N_BIG=${N_BIG:-2000} N_SMALL=${N_SMALL:-10000} N_LARGE=${N_LARGE:-100000}
N_HUGE=${N_HUGE:-1000000} HASH_MIB=${HASH_MIB:-1024}
for v in REPS N_BIG N_SMALL N_LARGE N_HUGE HASH_MIB; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive whole number, not '${!v}'" >&2; exit 2; }
done
for tool in curl openssl sha1sum find python3 /usr/bin/time; do
  command -v "$tool" > /dev/null || { echo "benches/run.sh needs $tool" >&2; exit 2; }
done
if [ -n "${BENCH_DIR:-}" ]; then
  WORK=$BENCH_DIR KEEP=1
else
  WORK=$(mktemp -d /tmp/immish-bench.XXXXXX) KEEP=0
fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOG=$WORK/bench.log
: > "$LOG"

. benches/lib.sh
if [ "$BUILD" = 1 ]; then
  echo "building release binaries" >&2
  bench_build
  cargo build --release --quiet --example hash-bench
fi
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/immish-sync SRV=$TARGET/release/immish-testserver
HASHBIN=${CARGO_TARGET_DIR:-target}/release/examples/hash-bench
# Another daemon binary to measure (an older build, to compare), if given.
BIN=${IMMISH_SYNC_BIN:-$BIN}
cleanup() {
  [ -n "${SRV_PID:-}" ] && kill "$SRV_PID" 2> /dev/null
  [ -n "${RUN_PID:-}" ] && kill "$RUN_PID" 2> /dev/null
  [ "$KEEP" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

# ---- helpers -------------------------------------------------------------------------------

# Runs a command, output to the log; prints "MICROSECONDS PEAK_RSS_KIB".
measure() {
  local s e rss
  s=$(date +%s%N)
  /usr/bin/time -f %M -o "$WORK/time.out" "$@" >> "$LOG" 2>&1 || { echo "failed: $*" >&2; tail -5 "$LOG" >&2; exit 1; }
  e=$(date +%s%N)
  rss=$(tail -1 "$WORK/time.out")
  echo "$(((e - s) / 1000)) $rss"
}

# The median of the numbers given.
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
secs() { awk -v u="$1" 'BEGIN {printf (u < 100000 ? "%.1f ms" : "%.2f s"), (u < 100000 ? u / 1000 : u / 1e6)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.0f MiB", k / 1024}'; }

# A fresh server (empty inventory) and a config for PHOTOS with the state in STATE.
fresh_server() {
  [ -n "${SRV_PID:-}" ] && bench_stop_server
  bench_start_server "$WORK"
  bench_write_config "$WORK" "$1" "$2"
  # Every `scan` pulls as it starts whatever `pull_interval` says (an incremental pull is
  # part of an unchanged re-scan's cost). The interval stays the default (5 min): a first
  # scan's mirror is fresh for that long, so its dedup needs no bulk check (ARCHITECTURE.md,
  # "Dedup order"); with "1s" every first scan longer than a second would measure the stale
  # case instead.
}

# How many upload bodies the current server took in (its counters).
bodies() {
  curl -s "http://127.0.0.1:$PORT/__admin/counters" |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("uploadBodies", 0))'
}

# A curl config uploading every file under DIR once, as the daemon would (one request each).
curl_config() {
  local dir=$1 out=$2
  python3 - "$dir" "$out" "$PORT" "$KEY" << 'PY'
import os, sys
root, out, port, key = sys.argv[1:]
with open(out, "w") as f:
    i = 0
    for d, _, names in os.walk(root):
        for name in sorted(names):
            if not name.endswith((".jpg", ".mp4")):
                continue
            i += 1
            p = os.path.join(d, name)
            if i > 1:
                f.write("next\n")  # between transfers: a trailing one would be a transfer without a URL
            f.write(f'url = "http://127.0.0.1:{port}/api/assets"\n'
                    f'header = "x-api-key: {key}"\n'
                    f'form = "deviceAssetId=curl-{i}"\nform = "deviceId=bench"\n'
                    'form = "fileCreatedAt=2024-01-01T00:00:00.000Z"\n'
                    'form = "fileModifiedAt=2024-01-01T00:00:00.000Z"\n'
                    f'form = "assetData=@{p};filename={name}"\n'
                    'output = "/dev/null"\n')
PY
}

# Uploads every file under DIR to a fresh server with curl --parallel; sets M="US RSS".
# (Functions that start a server set M rather than print: a $(...) subshell would stop the
# server it started when it ends.)
curl_parallel() {
  local dir=$1 n=$2 got
  fresh_server "$dir" "$WORK/unused-state"
  curl_config "$dir" "$WORK/curl.cfg"
  M=$(measure curl -s --parallel --parallel-max 8 --config "$WORK/curl.cfg")
  got=$(bodies)
  [ "$got" -ge "$n" ] || echo "warning: curl delivered $got of $n bodies" >&2
}

# First scan of DIR against a fresh server with a new state dir; sets M="US RSS".
first_scan() {
  local dir=$1 n=$2 state=$3 got
  rm -rf "$state"
  fresh_server "$dir" "$state"
  M=$(measure "$BIN" --config "$WORK/config.toml" scan)
  got=$(bodies)
  [ "$got" -ge "$n" ] || echo "warning: immish-sync delivered $got of $n bodies" >&2
}

# Moves the current server's assets' times an hour back (`POST /__admin/actions/backdate`).
backdate() {
  curl -sf -X POST -H 'content-type: application/json' -d '{"seconds": 3600}' \
    "http://127.0.0.1:$PORT/__admin/actions/backdate" >> "$LOG"
}

warm() { find "$1" -type f -print0 | xargs -0 cat > /dev/null; }

RESULTS=$WORK/results.txt
: > "$RESULTS"
row() { printf '%-46s | %-22s | %-52s | %-7s | %s\n' "$@" | tee -a "$RESULTS"; }

# ---- first scans of 2,000 and 10,000 files, the re-scan of the 2,000 ----------------------------

scan_goal() {
  local label=$1 dir=$2 n=$3 with_sha=$4
  local first=() rss=() rescan=() findt=() sha=() up=() i m
  warm "$dir"
  for i in $(seq "$REPS"); do
    first_scan "$dir" "$n" "$WORK/state"; first+=("${M% *}"); rss+=("${M#* }")
    # The first re-scan makes the mirror's first full pull of what was uploaded (the empty
    # inventory before the upload left no watermark). A re-scan straight after it would list
    # again what changed within two overlaps of that pull (the whole backup); the steady
    # state is the backup an hour old (as in many_goal below), whose pull lists nothing.
    measure "$BIN" --config "$WORK/config.toml" scan > /dev/null
    backdate
    m=$(measure "$BIN" --config "$WORK/config.toml" scan); rescan+=("${m% *}")
    m=$(measure find "$dir" -printf '%p %s %T@ %i\n'); findt+=("${m% *}")
    if [ "$with_sha" = 1 ]; then
      m=$(measure sh -c "find '$dir' -type f -print0 | xargs -0 -P2 -n 200 sha1sum"); sha+=("${m% *}")
    fi
    curl_parallel "$dir" "$n"; up+=("${M% *}")
  done
  local F R FI U S floor desc
  F=$(median "${first[@]}") R=$(median "${rescan[@]}") FI=$(median "${findt[@]}") U=$(median "${up[@]}")
  if [ "$with_sha" = 1 ]; then
    S=$(median "${sha[@]}"); floor=$((S + U))
    desc="sha1sum -P2 $(secs "$S") + curl --parallel $(secs "$U")"
  else
    floor=$U desc="curl --parallel $(secs "$U")"
  fi
  row "first scan, $label" "$(secs "$F"), $(mib "$(median "${rss[@]}")")" "$desc" "$(ratio "$F" "$floor")" "$5"
  row "unchanged re-scan, $(echo "$label" | cut -d' ' -f1) files, an hour old" "$(secs "$R")" "find -printf $(secs "$FI")" "$(ratio "$R" "$FI")" "report"
}

# ---- hashing ---------------------------------------------------------------------------------

hash_goal() {
  local h1=$WORK/hash/a.mp4 h2=$WORK/hash/b.mp4 i m o1=() r1=() o2=() r2=() s
  mkdir -p "$WORK/hash"
  for f in "$h1" "$h2"; do
    [ "$(stat -c %s "$f" 2> /dev/null || echo 0)" = $((HASH_MIB << 20)) ] ||
      head -c $((HASH_MIB << 20)) /dev/urandom > "$f"
  done
  cat "$h1" "$h2" > /dev/null
  for i in $(seq "$REPS"); do
    m=$(measure openssl dgst -sha1 "$h1"); o1+=("${m% *}")
    s=$("$HASHBIN" "$h1" | awk '{print $6}'); r1+=("$(awk -v s="$s" 'BEGIN {printf "%d", s * 1e6}')")
    m=$(measure sh -c "openssl dgst -sha1 '$h1' & openssl dgst -sha1 '$h2'; wait"); o2+=("${m% *}")
    s=$("$HASHBIN" "$h1" "$h2" | awk '{print $6}'); r2+=("$(awk -v s="$s" 'BEGIN {printf "%d", s * 1e6}')")
  done
  local O1 R1 O2 R2 gb
  O1=$(median "${o1[@]}") R1=$(median "${r1[@]}") O2=$(median "${o2[@]}") R2=$(median "${r2[@]}")
  gb() { awk -v b=$(($1 << 20)) -v u="$2" 'BEGIN {printf "%.2f GB/s", b / u / 1000}'; }
  row "SHA-1, one core, ${HASH_MIB} MiB" "$(gb "$HASH_MIB" "$R1")" "openssl dgst -sha1 $(gb "$HASH_MIB" "$O1")" "$(ratio "$O1" "$R1")" ">= 0.9 (speed)"
  row "SHA-1, two files on two cores" "$(gb $((2 * HASH_MIB)) "$R2")" "2 x openssl dgst -sha1 $(gb $((2 * HASH_MIB)) "$O2")" "$(ratio "$O2" "$R2")" ">= 0.9 (speed)"
}

# ---- one large upload ------------------------------------------------------------------------

upload_goal() {
  local dir=$WORK/upload i m full=() frss=() up=() urss=() cu=() crss=() hs=()
  mkdir -p "$dir"
  ln -f "$WORK/hash/a.mp4" "$dir/big.mp4"
  cat "$dir/big.mp4" > /dev/null
  for i in $(seq "$REPS"); do
    first_scan "$dir" 1 "$WORK/ustate"; full+=("${M% *}"); frss+=("${M#* }")
    # Another server (a new identity): the cached checksum stays, so this is the upload and
    # its verification alone.
    fresh_server "$dir" "$WORK/ustate"
    m=$(measure "$BIN" --config "$WORK/config.toml" scan); up+=("${m% *}"); urss+=("${m#* }")
    [ "$(bodies)" -ge 1 ] || echo "warning: the second scan sent no body" >&2
    fresh_server "$dir" "$WORK/unused-state"
    m=$(measure curl -s -o /dev/null -H "x-api-key: $KEY" -F deviceAssetId=x -F deviceId=bench \
      -F fileCreatedAt=2024-01-01T00:00:00.000Z -F fileModifiedAt=2024-01-01T00:00:00.000Z \
      -F "assetData=@$dir/big.mp4;filename=big.mp4" "http://127.0.0.1:$PORT/api/assets")
    cu+=("${m% *}"); crss+=("${m#* }")
    m=$(measure openssl dgst -sha1 "$dir/big.mp4"); hs+=("${m% *}")
  done
  local F U C H
  F=$(median "${full[@]}") U=$(median "${up[@]}") C=$(median "${cu[@]}") H=$(median "${hs[@]}")
  row "one ${HASH_MIB} MiB upload (scan, hash cached)" "$(secs "$U"), $(mib "$(median "${urss[@]}")")" "curl -F $(secs "$C"), $(mib "$(median "${crss[@]}")")" "$(ratio "$C" "$U")" ">= 0.9 (speed); RSS < 64 MiB"
  row "first scan of that file (hash + upload)" "$(secs "$F"), $(mib "$(median "${frss[@]}")")" "openssl dgst $(secs "$H") + curl -F $(secs "$C")" "$(ratio "$F" $((H + C)))" "report"
}

# ---- many files: re-scan, idle run, database ---------------------------------------------------

# Peak RSS (VmHWM) of `run` once it has gone idle (no CPU used for 3 s), and how long that took.
idle_run() {
  local s ticks last=-1 still=0 t=0 hwm
  s=$(date +%s%N)
  "$BIN" --config "$WORK/config.toml" run >> "$LOG" 2>&1 &
  RUN_PID=$!
  while [ $t -lt 1200 ]; do
    sleep 1; t=$((t + 1))
    ticks=$(awk '{print $14 + $15}' "/proc/$RUN_PID/stat" 2> /dev/null) || break
    if [ "$ticks" = "$last" ]; then still=$((still + 1)); else still=0; fi
    last=$ticks
    [ $still -ge 3 ] && break
  done
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$RUN_PID/status")
  kill -TERM "$RUN_PID"; wait "$RUN_PID" || true
  RUN_PID=
  # The start-up is the time to idle less the 3 s of stillness that proved it.
  echo "$(( ($(date +%s%N) - s) / 1000 - 3000000 )) $hwm"
}

many_goal() {
  local n=$1 folders=$2 label=$3 dir=$WORK/many-$1 state=$WORK/mstate i m
  local rescan=() findt=()
  gen_files "$dir" "$n" 200 1200 "$folders"
  warm "$dir"
  first_scan "$dir" "$n" "$state"
  local F=${M% *} FR=${M#* }
  # The first re-scan makes the mirror's first (full) pull; the second lists again what
  # changed on the server within two overlaps (10 min) of the last pull: straight after a
  # first backup, the whole library.
  measure "$BIN" --config "$WORK/config.toml" scan > /dev/null
  m=$(measure "$BIN" --config "$WORK/config.toml" scan)
  local AFTER=${m% *}
  # The steady state: the backup an hour old (the test server moves its assets' times back,
  # `POST /__admin/actions/backdate`), so that the incremental pull lists nothing.
  backdate
  for i in $(seq "$REPS"); do
    m=$(measure "$BIN" --config "$WORK/config.toml" scan); rescan+=("${m% *}")
    m=$(measure find "$dir" -printf '%p %s %T@ %i\n'); findt+=("${m% *}")
  done
  local R FI
  R=$(median "${rescan[@]}") FI=$(median "${findt[@]}")
  "$BIN" --config "$WORK/config.toml" scan > "$WORK/rescan.out" 2>&1 || true
  local hashed
  hashed=$(grep -o '([0-9,]* new or changed)' "$WORK/rescan.out" | head -1 || true)
  m=$(idle_run)
  local db
  db=$(stat -c %s "$state/state.sqlite3")
  row "first scan, $label" "$(secs "$F"), $(mib "$FR")" "-" "$(awk -v n="$n" -v u="$F" 'BEGIN {printf "%.0f/s", n / u * 1e6}')" "report"
  row "unchanged re-scan, $n files, backup 1 h old" "$(secs "$R") ${hashed:-}" "find -printf $(secs "$FI")" "$(ratio "$R" "$FI")" "<= 1.5"
  row "the same straight after the backup" "$(secs "$AFTER")" "find -printf $(secs "$FI")" "$(ratio "$AFTER" "$FI")" "report (lists the overlap)"
  row "run, idle with $n files, $folders folders" "peak $(mib "${m#* }"), up in $(secs "${m% *}")" "-" "-" "peak RSS < 64 MiB"
  row "state database, $n files" "$(awk -v b="$db" -v n="$n" 'BEGIN {printf "%.1f MB, %.0f B/file", b / 1e6, b / n}')" "-" "-" "<= 500 B/file"
}

# ---- main ------------------------------------------------------------------------------------

{
  echo "immish-sync benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')$(grep -q sha_ni /proc/cpuinfo && echo ', SHA-NI' || echo ', no SHA-NI'), medians of $REPS"
  echo "(ratio: immish-sync time / floor time, or for speeds floor time / immish-sync time)"
} | tee -a "$RESULTS"
row "work" "immish-sync" "floor, same run" "ratio" "goal"
if [ "$QUICK" = 1 ]; then
  gen_files "$WORK/big" "$N_BIG" $((50 << 10)) $((500 << 10)) 220
  gen_files "$WORK/small" "$N_SMALL" $((1 << 10)) $((4 << 10)) 100
  scan_goal "$N_BIG x 50-500 KiB" "$WORK/big" "$N_BIG" 1 "<= 1.3"
  scan_goal "$N_SMALL x 1-4 KiB" "$WORK/small" "$N_SMALL" 0 "<= 1.5"
  hash_goal
  upload_goal
fi
if [ "$SMALL" = 1 ]; then
  gen_files "$WORK/small" "$N_SMALL" $((1 << 10)) $((4 << 10)) 100
  scan_goal "$N_SMALL x 1-4 KiB" "$WORK/small" "$N_SMALL" 0 "<= 1.5"
fi
[ "$LARGE" = 1 ] && many_goal "$N_LARGE" 2000 "$N_LARGE x 0.2-1.2 KiB, 2,000 folders"
[ "$MILLION" = 1 ] && many_goal "$N_HUGE" 10000 "$N_HUGE x 0.2-1.2 KiB, 10,000 folders"
echo "results: $RESULTS (log: $LOG)" >&2
if [ "$KEEP" = 0 ]; then
  cp "$RESULTS" "/tmp/immish-bench-results.$$.txt"
  echo "results copied to /tmp/immish-bench-results.$$.txt (the data is removed)" >&2
fi
