#!/usr/bin/env bash
# Builds the .deb from a staged tree with `dpkg-deb --build` (no cargo-deb needed).
#
#   packaging/deb/build.sh [--profile release|debug] [--no-build] [--out DIR]
#
# --profile debug packages target/debug/immish-sync (stripped of debug info): CI uses it
# to check the package without a release build, which costs minutes on two cores. Releases
# use the default, release. --no-build packages the binary that is already there.
# The binary is built with --no-default-features: the package leaves out the demo (the cargo
# feature `demo`, which carries the test server); its `immish-sync demo` says how to get it.
# Prints the path of the .deb on the last line.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=release
build=yes
out=target/deb
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --no-build) build=no; shift ;;
        --out) out="$2"; shift 2 ;;
        *) echo "usage: $0 [--profile release|debug] [--no-build] [--out DIR]" >&2; exit 2 ;;
    esac
done
case "$profile" in
    release) cargo_flags=(--release) ;;
    debug) cargo_flags=() ;;
    *) echo "--profile is release or debug, not $profile" >&2; exit 2 ;;
esac

if [ "$build" = yes ]; then
    cargo build --locked --no-default-features "${cargo_flags[@]}" -p immish-sync --bin immish-sync
fi
bin="target/$profile/immish-sync"
[ -x "$bin" ] || { echo "no binary at $bin (drop --no-build)" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/immish-sync_${version}_${arch}"
doc="$root/usr/share/doc/immish-sync"

# The binary, without debug info (a debug build's is most of its size).
install -d "$root/usr/bin"
strip --strip-debug -o "$root/usr/bin/immish-sync" "$bin"
chmod 0755 "$root/usr/bin/immish-sync"
gen() { "$root/usr/bin/immish-sync" generate "$@"; }

# Units: the system service and the user service (systemctl --user).
install -Dm0644 packaging/systemd/immish-sync.service "$root/usr/lib/systemd/system/immish-sync.service"
install -Dm0644 packaging/systemd/user/immish-sync.service "$root/usr/lib/systemd/user/immish-sync.service"

# Man page and completions, generated from the command-line definitions.
install -d "$root/usr/share/man/man1"
gen man | gzip -9n > "$root/usr/share/man/man1/immish-sync.1.gz"
install -d "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d"
gen completions bash > "$root/usr/share/bash-completion/completions/immish-sync"
gen completions zsh > "$root/usr/share/zsh/vendor-completions/_immish-sync"
gen completions fish > "$root/usr/share/fish/vendor_completions.d/immish-sync.fish"

# The example config and the inotify snippet are examples, not active files: the sysctl
# snippet would lower the limit on kernels that size it from RAM (see its comments), so
# the admin copies it to /etc/sysctl.d when it helps.
install -Dm0644 config.example.toml "$doc/examples/config.example.toml"
install -Dm0644 packaging/sysctl/60-immish-sync-inotify.conf "$doc/examples/60-immish-sync-inotify.conf"
install -Dm0644 packaging/README.md "$doc/README.packaging.md"
install -Dm0644 packaging/deb/copyright "$doc/copyright"

install -d "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: immish-sync
Version: $version
Architecture: $arch
Maintainer: immish-sync developers <immish-sync@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.31)
Recommends: systemd
Section: utils
Priority: optional
Description: background photo-backup agent for Immich-compatible servers
 Watches photo and video folders and uploads each file to an Immich server
 exactly once, with a local SQLite catalogue, retries and a mirror of the
 server. Runs as a hardened systemd service (system or user) with a watchdog.
CONTROL
# systemd learns of the new units; nothing is enabled or started without the admin.
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
POSTINST
chmod 0755 "$root/DEBIAN/postinst"

mkdir -p "$out"
deb="$out/immish-sync_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
