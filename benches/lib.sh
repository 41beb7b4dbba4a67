# Shared by the bench scripts: build the release binaries, start the standalone test server
# on a free loopback port, and write a daemon config pointing at it.
# After `bench_start_server WORK`: $PORT, $KEY, $SRV_PID are set and the server is killed on
# exit (or by `bench_stop_server`). `bench_write_config WORK PHOTOS STATE` writes WORK/config.toml (mode 0600).

bench_build() {
  cargo build --release --quiet -p immish-sync -p immish-testserver
  TARGET=${CARGO_TARGET_DIR:-target}
  BIN=$TARGET/release/immish-sync
  SRV=$TARGET/release/immish-testserver
}

bench_start_server() {
  local work=$1
  # Port 0: the OS picks a free one, read back from the server's first line.
  $SRV --port 0 > "$work/server.out" 2>/dev/null &
  SRV_PID=$!
  trap 'kill $SRV_PID 2>/dev/null' EXIT
  for _ in $(seq 100); do grep -q '^api key:' "$work/server.out" 2>/dev/null && break; sleep 0.05; done
  KEY=$(sed -n 's/^api key: //p' "$work/server.out")
  PORT=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$work/server.out")
  [ -n "$KEY" ] && [ -n "$PORT" ] || { echo "the test server did not start" >&2; exit 1; }
}

# Stops the server of the last `bench_start_server` (a fresh one has an empty inventory).
bench_stop_server() {
  kill "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
}

bench_write_config() {
  local work=$1 photos=$2 state=$3
  cat > "$work/config.toml" <<TOML
[server]
url = "http://127.0.0.1:$PORT"
api_key = "$KEY"
[state]
dir = "$state"
[[roots]]
path = "$photos"
[log]
level = "warn"
# The files were just written: take them at once, the bench measures the pipeline.
[watch]
settle = "0s"
TOML
  chmod 600 "$work/config.toml"
}

# Generates N files of LO..HI bytes under DIR in FOLDERS folders (kept when DIR has them).
gen_files() {
  local dir=$1 n=$2 lo=$3 hi=$4 folders=$5
  if [ -f "$dir/.complete" ]; then return; fi
  rm -rf "$dir"; mkdir -p "$dir"
  echo "generating $n files in $dir" >&2
  python3 - "$dir" "$n" "$lo" "$hi" "$folders" << 'PY'
import os, random, sys
root, n, lo, hi, folders = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rnd = random.Random(42)
made = set()
for i in range(n):
    f = i % folders
    d = os.path.join(root, f"{2000 + f % 20}", f"{f // 20:04d}")
    if d not in made:
        os.makedirs(d, exist_ok=True)
        made.add(d)
    size = rnd.randint(lo, hi)
    with open(os.path.join(d, f"IMG_{i:07d}.jpg"), "wb") as out:
        # Not a JPEG inside (random bytes after FF D8 look like cut-short segments to the
        # completeness check): content of no known structure is taken as it is.
        out.write(b"bench\n" + os.urandom(max(size - 6, 0)))
PY
  touch "$dir/.complete"
}
