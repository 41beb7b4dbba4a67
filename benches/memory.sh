#!/usr/bin/env bash
# Peak memory of one large upload
# (docs/RELIABILITY.md#a-stalled-server-and-very-large-uploads): a sparse video of SIZE MiB
# (default 2048) sent to the standalone test server with its reads throttled to RATE bytes/s
# (default 50 MB/s; the recipe's 5 MB/s takes seven minutes for 2 GiB and shows the same peak).
# Prints the daemon's peak RSS next to curl's for the same file. The file is uploaded in full
# and verified, so this also shows that no whole-request timeout cuts a long upload.
#
# usage: benches/memory.sh [SIZE_MIB] [RATE_BYTES_PER_S]
set -euo pipefail
SIZE=${1:-2048}
RATE=${2:-50000000}
WORK=$(mktemp -d)
cd "$(dirname "$0")/.."
. benches/lib.sh
bench_build
mkdir -p "$WORK/photos"
truncate -s "${SIZE}M" "$WORK/photos/big.mp4"
printf 'x' | dd of="$WORK/photos/big.mp4" bs=1 seek=1000 conv=notrunc status=none

bench_start_server "$WORK"
trap 'kill $SRV_PID 2>/dev/null; rm -rf "$WORK"' EXIT
bench_write_config "$WORK" "$WORK/photos" "$WORK/state"
curl -s -XPOST "http://127.0.0.1:$PORT/__admin/fault" -H 'content-type: application/json' \
  -d "{\"kind\":\"slow_body\",\"bytesPerSec\":$RATE}" > /dev/null

/usr/bin/time -f '%M %e' -o "$WORK/daemon.time" "$BIN" --config "$WORK/config.toml" scan > "$WORK/scan.out"
read -r RSS SECS < "$WORK/daemon.time"
curl -s -XDELETE "http://127.0.0.1:$PORT/__admin/counters" > /dev/null
/usr/bin/time -f '%M %e' -o "$WORK/curl.time" curl -s -o /dev/null -H "x-api-key: $KEY" \
  -F deviceAssetId=x -F deviceId=bench -F fileCreatedAt=2024-01-01T00:00:00.000Z \
  -F fileModifiedAt=2024-01-01T00:00:00.000Z -F "assetData=@$WORK/photos/big.mp4;filename=curl.mp4" \
  "http://127.0.0.1:$PORT/api/assets"
read -r CRSS CSECS < "$WORK/curl.time"
grep -q 'all files are backed up' "$WORK/scan.out" || { cat "$WORK/scan.out"; exit 1; }
echo "file ${SIZE} MiB, server reads at ${RATE} B/s"
echo "immish-sync scan: peak RSS $((RSS / 1024)) MiB, ${SECS} s (hash + upload + verify)"
echo "curl -F:          peak RSS $((CRSS / 1024)) MiB, ${CSECS} s (upload only)"
