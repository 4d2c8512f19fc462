#!/usr/bin/env bash
# Fuzzes what reads untrusted bytes — the wire reader and the event
# validation (mamori_proto::fuzz) — with cargo-fuzz (libFuzzer, nightly).
# Usage: scripts/fuzz.sh [SECONDS per target, default 300]. The inputs in
# fuzz/regressions/ seed each run; the corpus it grows is kept beside the
# build (outside the clone). A crash is copied into fuzz/regressions/,
# where `cargo test -p mamori-proto` replays it from then on: fix, commit.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
case "$secs" in '' | *[!0-9]*) echo "seconds must be a whole number, got '$secs'" >&2; exit 2 ;; esac
base=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
export CARGO_TARGET_DIR="$base/fuzz"
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "installing the nightly toolchain (cargo-fuzz needs it)" >&2
    if ! rustup toolchain install nightly --profile minimal; then
        echo "the fuzzers need the nightly toolchain and rustup could not install it: rustup toolchain install nightly" >&2
        exit 1
    fi
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi
for target in wire validate; do
    corpus="$CARGO_TARGET_DIR/corpus/$target"
    artifacts="$CARGO_TARGET_DIR/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    echo "== fuzzing $target for ${secs}s" >&2
    if ! cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus" "fuzz/regressions/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1; then
        for crash in "$artifacts"/*; do
            [ -f "$crash" ] || continue
            cp "$crash" "fuzz/regressions/$target/"
            echo "crash kept as fuzz/regressions/$target/$(basename "$crash")" >&2
        done
        exit 1
    fi
done
