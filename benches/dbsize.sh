#!/usr/bin/env bash
# The state database's bytes a file (issue 12; docs/BENCHMARKS.md, "Session 7"): N small
# files (0.2-1.2 KiB in N/50 folders, the generator and seed of benches/run.sh), a first
# `scan` against a fresh in-repo test server, then a second `scan` (its pull fills the
# mirror as a daemon's first pull would), then SQLite's `dbstat` of the file: bytes a file
# per table and index, as written and after a `VACUUM` of a copy. Not a test.
#
# usage: benches/dbsize.sh [BIN [SRV]]   (default: the debug builds in target/)
# environment: N (default 10000), BENCH_DIR (default: a new directory under /tmp, removed at
# the end; a given one is kept and its data reused)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${1:-$TARGET/debug/immish-sync} SRV=${2:-$TARGET/debug/immish-testserver}
N=${N:-10000}
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive whole number, not '$N'" >&2; exit 2; }
for f in "$BIN" "$SRV"; do
  [ -x "$f" ] || { echo "$f: not built (cargo build -p immish-sync -p immish-testserver)" >&2; exit 2; }
done
if [ -n "${BENCH_DIR:-}" ]; then WORK=$BENCH_DIR KEEP=1; else WORK=$(mktemp -d /tmp/immish-dbsize.XXXXXX) KEEP=0; fi
mkdir -p "$WORK"; WORK=$(cd "$WORK" && pwd)
. benches/lib.sh
trap '[ -n "${SRV_PID:-}" ] && kill "$SRV_PID" 2> /dev/null; [ "$KEEP" = 1 ] || rm -rf "$WORK"' EXIT

PHOTOS=$WORK/photos-$N
gen_files "$PHOTOS" "$N" 200 1200 $((N / 50 > 0 ? N / 50 : 1))
RUN=$WORK/run; rm -rf "$RUN"; mkdir -p "$RUN"
bench_start_server "$RUN"
bench_write_config "$RUN" "$PHOTOS" "$RUN/state"
# Pull on every scan: the second scan's pull fills the mirror.
printf '[mirror]\npull_interval = "1s"\n' >> "$RUN/config.toml"
"$BIN" --config "$RUN/config.toml" scan > "$RUN/scan1.out" 2>&1
sleep 1.2
"$BIN" --config "$RUN/config.toml" scan > "$RUN/scan2.out" 2>&1
bench_stop_server
python3 - "$RUN/state/state.sqlite3" "$N" << 'PY'
import os, shutil, sqlite3, sys
path, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(path)
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
def table(conn):
    return dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
written = table(c)
free = c.execute("PRAGMA freelist_count").fetchone()[0]
size = os.path.getsize(path)
c.close()
copy = path + ".vacuumed"
shutil.copy(path, copy)
v = sqlite3.connect(copy)
v.execute("VACUUM")
vacuumed = table(v)
v.close()
vsize = os.path.getsize(copy)
os.remove(copy)
print(f"SQLite {sqlite3.sqlite_version}, {n} files, {free} free pages")
print(f"| table or index, bytes a file | as written | vacuumed |")
print("|---|---|---|")
small = [k for k in written if written[k] <= 2 * 4096]
for name in sorted(written, key=lambda k: -written[k]):
    if name not in small:
        print(f"| `{name}` | {written[name] / n:.1f} | {vacuumed.get(name, 0) / n:.1f} |")
rest = sum(written[k] for k in small)
vrest = sum(vacuumed.get(k, 0) for k in small)
print(f"| {len(small)} others (one or two pages each) | {rest / n:.1f} | {vrest / n:.1f} |")
print(f"| **whole file** | **{size / n:.1f}** | **{vsize / n:.1f}** |")
PY
