#!/usr/bin/env bash
# First scan and re-scan of N files (default 2,000 of 50–500 KiB) against the standalone test
# server, side by side with the physical floors on the same data:
#   walk:  find -printf '%p %s %T@ %i'   (what a stat-only re-scan cannot beat)
#   hash:  sha1sum over every file       (what hashing cannot beat with a portable SHA-1)
#   send:  curl -F of the largest file, and the total bytes over the first scan's time
# Prints ratios; run it on an idle machine, medians of a few runs if you compare.
#
# usage: benches/scan.sh [N] [WORKDIR]     (MIN_KIB / MAX_KIB set the file sizes, 50–500)
set -euo pipefail
N=${1:-2000}
WORK=${2:-$(mktemp -d)}
cd "$(dirname "$0")/.."
. benches/lib.sh
bench_build

PHOTOS=$WORK/photos STATE=$WORK/state
mkdir -p "$PHOTOS"
if [ -z "$(ls -A "$PHOTOS")" ]; then
  echo "generating $N files in $PHOTOS"
  python3 - "$PHOTOS" "$N" "${MIN_KIB:-50}" "${MAX_KIB:-500}" <<'PY'
import os, random, sys
root, n, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(42)
for i in range(n):
    d = os.path.join(root, f"{2000 + i % 20}", f"{i % 11:02d}")
    os.makedirs(d, exist_ok=True)
    size = rnd.randint(lo * 1024, hi * 1024)
    with open(os.path.join(d, f"IMG_{i:05d}.jpg"), "wb") as f:
        f.write(b"\xff\xd8" + os.urandom(size - 4) + b"\xff\xd9")
PY
fi
rm -rf "$STATE"
BYTES=$(find "$PHOTOS" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')

bench_start_server "$WORK"
bench_write_config "$WORK" "$PHOTOS" "$STATE"

t() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
FIRST=$(t $BIN --config "$WORK/config.toml" scan)
RESCAN=$(t $BIN --config "$WORK/config.toml" scan)
FIND=$(t find "$PHOTOS" -printf '%p %s %T@ %i\n')
SHA=$(t sh -c "find '$PHOTOS' -type f -print0 | xargs -0 -P2 -n200 sha1sum")
BIG=$(find "$PHOTOS" -type f -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
CURL=$(t curl -s -o /dev/null -H "x-api-key: $KEY" -F deviceAssetId=x -F deviceId=bench \
  -F fileCreatedAt=2024-01-01T00:00:00.000Z -F fileModifiedAt=2024-01-01T00:00:00.000Z \
  -F "assetData=@$BIG;filename=curl-probe.jpg" "http://127.0.0.1:$PORT/api/assets")

BODIES=$(curl -s "http://127.0.0.1:$PORT/__admin/counters" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("uploadBodies"))')
MB=$(echo "$BYTES / 1000000" | bc -l)
printf '\nfiles %d, %.1f MB\n' "$N" "$MB"
printf 'first scan (walk+hash+check+upload+verify): %.2f s  = %.0f files/s, %.1f MB/s\n' \
  "$FIRST" "$(echo "$N / $FIRST" | bc -l)" "$(echo "$MB / $FIRST" | bc -l)"
printf 'sha1sum of all files, 2 processes:          %.2f s  (first scan / sha1sum = %.2f)\n' \
  "$SHA" "$(echo "$FIRST / $SHA" | bc -l)"
printf 're-scan of the unchanged tree:              %.3f s\n' "$RESCAN"
printf "find -printf on the same tree:              %.3f s  (re-scan / find = %.2f)\n" \
  "$FIND" "$(echo "$RESCAN / $FIND" | bc -l)"
printf 'curl -F of the largest file (%s):          %.3f s\n' "$(stat -c %s "$BIG")" "$CURL"
echo "upload bodies the server received (incl. the curl probe): $BODIES"
