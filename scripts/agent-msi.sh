#!/usr/bin/env bash
# Builds the Windows agent's installer (mamori-agent.msi) with Debian's
# wixl from agent/packaging/windows/mamori-agent.wxs, then patches in with
# msibuild what wixl cannot express.
# Usage: scripts/agent-msi.sh [OUT_DIR] — release build for
# x86_64-pc-windows-gnu, MSI in OUT_DIR (default $CARGO_TARGET_DIR/windows).
# MAMORI_AGENT_EXE=PATH packages that .exe instead (the tests use the debug
# one). With MAMORI_SIGN_CERT (PEM certificate chain) and MAMORI_SIGN_KEY
# (PEM private key) the .exe is signed before it is packaged and the MSI
# after (Authenticode, SHA-256, osslsigncode); MAMORI_SIGN_TIMESTAMP=URL
# adds an RFC 3161 time stamp so the signatures outlive the certificate.
# Without them nothing is signed (and Windows SmartScreen warns).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
out=${1:-$CARGO_TARGET_DIR/windows}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
for tool in wixl msibuild msiinfo; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "$tool is missing: install Debian's wixl and msitools (apt-get install wixl msitools)" >&2
        exit 1
    }
done
exe=${MAMORI_AGENT_EXE:-}
if [ -z "$exe" ]; then
    echo "==> building mamori-agent.exe (release, x86_64-pc-windows-gnu)" >&2
    cargo build --release --locked -p mamori-agent --target x86_64-pc-windows-gnu >&2
    exe=$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/release/mamori-agent.exe
fi
[ -f "$exe" ] || { echo "no agent executable at $exe" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$exe" "$stage/mamori-agent.exe"
# Line tables make backtraces; a program going to every PC does without.
x86_64-w64-mingw32-strip --strip-debug "$stage/mamori-agent.exe"
sign() { # FILE: signs it in place when a certificate is given
    [ -n "${MAMORI_SIGN_CERT:-}" ] || return 0
    [ -n "${MAMORI_SIGN_KEY:-}" ] || { echo "MAMORI_SIGN_CERT is set but MAMORI_SIGN_KEY is not" >&2; exit 1; }
    command -v osslsigncode >/dev/null 2>&1 || { echo "osslsigncode is missing: apt-get install osslsigncode" >&2; exit 1; }
    local stamp=()
    [ -z "${MAMORI_SIGN_TIMESTAMP:-}" ] || stamp=(-ts "$MAMORI_SIGN_TIMESTAMP")
    osslsigncode sign -certs "$MAMORI_SIGN_CERT" -key "$MAMORI_SIGN_KEY" -h sha256 \
        -n "Mamori agent" "${stamp[@]}" -in "$1" -out "$1.signed" >&2
    mv "$1.signed" "$1"
    echo "==> signed $(basename "$1")" >&2
}
sign "$stage/mamori-agent.exe"
mkdir -p "$out"
msi="$(cd "$out" && pwd)/mamori-agent-$version.msi"
wxs=$PWD/agent/packaging/windows/mamori-agent.wxs
# wixl finds sources by relative paths only.
(cd "$stage" && wixl -a x64 -D Version="$version" -D AgentExe=mamori-agent.exe -o "$msi" "$wxs")
q() { msibuild "$msi" -q "$1"; }
# The token's registry value only when TOKEN=... is given (and its removal).
q "UPDATE \`Component\` SET \`Condition\` = 'TOKEN OR REMOVE~=\"ALL\"' WHERE \`Component\` = 'AgentToken'"
# Properties passed from the command line to the elevated install, and
# kept out of the installer's log.
q "UPDATE \`Property\` SET \`Value\` = 'WIX_DOWNGRADE_DETECTED;WIX_UPGRADE_DETECTED;SERVER;TOKEN;UNINSTALL_CODE' WHERE \`Property\` = 'SecureCustomProperties'"
q "INSERT INTO \`Property\` (\`Property\`, \`Value\`) VALUES ('MsiHiddenProperties', 'TOKEN;UNINSTALL_CODE')"
# The key holding the enrollment token (until the service has enrolled and
# deleted it) readable by SYSTEM and Administrators only, whatever the
# locale's group names (SDDL; Windows Installer 5).
token_row=$(msiinfo export "$msi" Registry | awk -F'\t' '$4 == "EnrollmentToken" { print $1 }')
[ -n "$token_row" ] || { echo "no EnrollmentToken row in the MSI's Registry table" >&2; exit 1; }
printf '%s\t%s\t%s\t%s\t%s\r\n' \
    MsiLockPermissionsEx LockObject Table SDDLText Condition \
    s72 s72 s32 l0 S255 \
    MsiLockPermissionsEx MsiLockPermissionsEx '' '' '' \
    AgentTokenKey "$token_row" Registry 'D:P(A;;GA;;;SY)(A;;GA;;;BA)' '' \
    | sed 's/\t*\r$/\r/' > "$stage/MsiLockPermissionsEx.idt"
msibuild "$msi" -i "$stage/MsiLockPermissionsEx.idt"
# Each patch must have landed (msibuild says nothing when a WHERE matches
# no row).
check() { # TABLE TEXT
    # (Exported to a file first: `grep -q` closing the pipe early would
    # fail msiinfo under pipefail.)
    msiinfo export "$msi" "$1" > "$stage/$1.idt"
    grep -qF "$2" "$stage/$1.idt" || {
        echo "patching the MSI failed: $1 lacks $2 (has wixl's output changed?)" >&2
        exit 1
    }
}
check Component 'TOKEN OR REMOVE~="ALL"'
check Property 'SERVER;TOKEN;UNINSTALL_CODE'
check Property 'MsiHiddenProperties'
check MsiLockPermissionsEx 'D:P(A;;GA;;;SY)(A;;GA;;;BA)'
# Signed last: any change to the MSI after this would break the signature.
sign "$msi"
echo "$msi"
