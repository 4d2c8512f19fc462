#!/usr/bin/env bash
# Prepares a Wine prefix (Debian's Wine 8.0, 64-bit) in which Rust-built
# x86_64-pc-windows-gnu executables run, for the tests only.
#
# Rust's standard library (>= 1.78) imports ProcessPrng from
# bcryptprimitives.dll, which Wine 8.0 lacks, so every Rust .exe fails to
# load (c0000135). The prefix therefore gets a test-only shim DLL built from
# scripts/wine/bcryptprimitives.c (into the prefix, never into the repo).
#
# Usage: scripts/wine-prefix.sh DIR
#   or, sourced:  . scripts/wine-prefix.sh; wine_prefix DIR; ...; stop_wine DIR
# wine_prefix creates DIR itself (Wine refuses a prefix the caller does not
# own), boots it once (no Mono or Gecko: those would need the network),
# and installs the shim; run again it only rebuilds the shim if its source
# changed (about a second). Sourced, it also exports WINEPREFIX=DIR,
# WINEARCH=win64 and WINEDEBUG (-all unless already set) for later `wine`
# calls. Console programs need no X display (no xvfb-run).

declare -F log >/dev/null || log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

wine_shim_src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/wine/bcryptprimitives.c

# wine_tools_present: stops with the Debian package to install when wine or
# the MinGW-w64 compiler is missing.
wine_tools_present() {
    local tool pkg missing=
    for tool in wine:wine wineserver:wine x86_64-w64-mingw32-gcc:gcc-mingw-w64-x86-64; do
        pkg=${tool#*:}
        tool=${tool%%:*}
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "$tool is missing: install the Debian package $pkg (apt-get install $pkg)" >&2
            missing=1
        fi
    done
    [ -z "$missing" ]
}

# wine_prefix DIR: creates or updates the prefix in DIR (see above).
wine_prefix() {
    local dir=${1:?usage: wine_prefix DIR} dll sys32
    wine_tools_present || return 1
    [ -f "$wine_shim_src" ] || { echo "missing $wine_shim_src" >&2; return 1; }
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd) || return 1
    if [ ! -O "$dir" ]; then
        echo "$dir is not owned by $(id -un): Wine refuses such a prefix; remove it or choose another" >&2
        return 1
    fi
    export WINEPREFIX=$dir WINEARCH=win64 WINEDEBUG=${WINEDEBUG:--all}
    if [ ! -f "$dir/system.reg" ]; then
        log "creating the Wine prefix $dir (wineboot)"
        # No display (no windows pop up) and no Mono or Gecko installer.
        env -u DISPLAY -u WAYLAND_DISPLAY WINEDLLOVERRIDES="mscoree,mshtml=" \
            wine wineboot --init </dev/null >/dev/null 2>&1 \
            || { echo "wineboot failed in $dir" >&2; return 1; }
        wineserver -w
        [ -f "$dir/system.reg" ] || { echo "wineboot left no $dir/system.reg" >&2; return 1; }
    fi
    dll=$dir/bcryptprimitives.dll
    if [ ! -f "$dll" ] || [ "$wine_shim_src" -nt "$dll" ]; then
        log "building the test-only bcryptprimitives.dll shim (ProcessPrng)"
        x86_64-w64-mingw32-gcc -shared -O2 -s -Wall -o "$dll" "$wine_shim_src" -lbcrypt || return 1
    fi
    sys32=$dir/drive_c/windows/system32
    [ -d "$sys32" ] || { echo "$sys32 is missing: remove $dir and run again" >&2; return 1; }
    if ! cmp -s "$dll" "$sys32/bcryptprimitives.dll"; then
        cp "$dll" "$sys32/bcryptprimitives.dll" || return 1
    fi
    log "Wine prefix ready: WINEPREFIX=$dir"
}

# stop_wine DIR: stops the prefix's wineserver and every program in it.
stop_wine() {
    WINEPREFIX=$(cd "${1:?usage: stop_wine DIR}" 2>/dev/null && pwd || echo "$1") \
        wineserver -k >/dev/null 2>&1 || true
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    [ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
    wine_prefix "$1"
fi
