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
if [ "$missing" -ne 0 ]; then
    echo "contents of $deb:" >&2
    echo "$listed" >&2
    exit 1
fi
echo "$deb: every expected path is there"
