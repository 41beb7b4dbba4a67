#!/usr/bin/env bash
# Checks that a .deb holds every path in packaging/deb/expected-paths (dpkg-deb -c), and
# that its control file names the package.
#
#   packaging/deb/check.sh target/deb/immish-sync_0.1.0_amd64.deb
set -euo pipefail
here="$(dirname "$0")"
deb="$1"
listed=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|; s|/$||')
missing=0
while IFS= read -r want; do
    case "$want" in ''|'#'*) continue ;; esac
    if ! grep -qxF "$want" <<<"$listed"; then
        echo "missing from $deb: $want" >&2
        missing=1
    fi
done < "$here/expected-paths"
[ "$(dpkg-deb -f "$deb" Package)" = immish-sync ] || { echo "wrong Package: field" >&2; missing=1; }
# The packaged binary carries no demo (built with --no-default-features): it says so.
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
dpkg-deb -x "$deb" "$unpacked"
# (A binary that does carry it would run the demo until stopped: at most 10 s.)
if demo_out=$(timeout 10 "$unpacked/usr/bin/immish-sync" demo 2>&1 </dev/null) \
    || ! grep -q "built without the demo" <<<"$demo_out"; then
    echo "the packaged binary should carry no demo, but \`immish-sync demo\` said: $demo_out" >&2
    missing=1
fi
if [ "$missing" -ne 0 ]; then
    echo "contents of $deb:" >&2
    echo "$listed" >&2
    exit 1
fi
echo "$deb: every expected path is there"
