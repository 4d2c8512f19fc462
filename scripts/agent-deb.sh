#!/usr/bin/env bash
# Builds the agent's Debian package: the binary, its hardened systemd unit
# and maintainer scripts (agent/packaging), with dpkg-deb.
# Usage: scripts/agent-deb.sh [OUT_DIR] — release build, package in
# OUT_DIR (default $CARGO_TARGET_DIR/debian). MAMORI_AGENT_BIN=PATH
# packages that binary instead of building (the tests use the debug one).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
out=${1:-$CARGO_TARGET_DIR/debian}
# MAMORI_DEB_VERSION overrides the package version (the tests build an
# upgrade of the same binary with it).
version=${MAMORI_DEB_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
bin=${MAMORI_AGENT_BIN:-}
if [ -z "$bin" ]; then
    echo "==> building mamori-agent (release)" >&2
    cargo build --release --locked -p mamori-agent >&2
    bin=$CARGO_TARGET_DIR/release/mamori-agent
fi
[ -x "$bin" ] || { echo "no agent binary at $bin" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$bin" "$stage/usr/bin/mamori-agent"
# The release profile keeps line tables for backtraces; a package going to
# every PC does without them (a fifth of the size).
strip --strip-debug "$stage/usr/bin/mamori-agent"
install -D -m 0644 agent/packaging/mamori-agent.service "$stage/lib/systemd/system/mamori-agent.service"
mkdir -p "$stage/usr/share/doc/mamori-agent"
printf 'Upstream-Name: mamori\nLicense: Apache-2.0\n' >"$stage/usr/share/doc/mamori-agent/copyright"
mkdir -p "$stage/DEBIAN"
for s in postinst prerm postrm; do
    install -m 0755 "agent/packaging/deb/$s" "$stage/DEBIAN/$s"
done
size=$(du -sk "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: mamori-agent
Version: $version
Architecture: amd64
Maintainer: Mamori <dev@mamori.example>
Depends: libc6 (>= 2.36)
Installed-Size: $size
Section: admin
Priority: optional
Description: Mamori endpoint agent
 Records who did what on this PC (logons, programs, files, USB media,
 printing, web access), enforces the company's policy (banned programs,
 USB control) and streams the events to the Mamori server.
CONTROL
mkdir -p "$out"
deb="$out/mamori-agent_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
