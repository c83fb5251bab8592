#!/usr/bin/env bash
# The one test command for hopcore (also what CI runs, via .ci/run).
#
#   1. scripts/setup-peers.sh       interop peers (aiocoap venv, plugtest sdist, libcoap, tcpdump, tshark)
#   2. cargo fmt --check
#   3. cargo clippy -D warnings     whole workspace, all targets
#   4. cargo test                   whole workspace, with HOPCORE_PEERS_VENV set so the interop
#                                   tests run against the peers (and fail, not skip, if broken)
#   5. cargo +nightly fuzz build    only if fuzz/ exists (installs cargo-fuzz if missing)
#
# Environment knobs:
#   HOPCORE_SKIP_PEERS=1   skip step 1 and do not export HOPCORE_PEERS_VENV (interop tests skip)
#   HOPCORE_SKIP_FUZZ=1    skip step 5
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

T0=$SECONDS
section() {
    printf '\n========== [%4ss] %s ==========\n' "$((SECONDS - T0))" "$*"
}

if [ "${HOPCORE_SKIP_PEERS:-0}" = "1" ]; then
    section "interop peers: SKIPPED (HOPCORE_SKIP_PEERS=1; interop tests will skip)"
    unset HOPCORE_PEERS_VENV
else
    section "interop peers: scripts/setup-peers.sh"
    ./scripts/setup-peers.sh
    # Interop tests look here for aiocoap-client/-fileserver/-proxy and the venv python;
    # with the variable set they must fail (not skip) when a peer is broken.
    export HOPCORE_PEERS_VENV="$REPO/.venv"
    echo "HOPCORE_PEERS_VENV=$HOPCORE_PEERS_VENV"
fi

section "cargo fmt --all -- --check"
cargo fmt --all -- --check

section "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

section "cargo test --workspace"
cargo test --workspace

if [ -d fuzz ]; then
    if [ "${HOPCORE_SKIP_FUZZ:-0}" = "1" ]; then
        section "cargo +nightly fuzz build: SKIPPED (HOPCORE_SKIP_FUZZ=1)"
    else
        section "cargo +nightly fuzz build (fuzz/)"
        if ! cargo +nightly --version >/dev/null 2>&1; then
            echo "ERROR: fuzz/ exists but the nightly toolchain is not installed" \
                "(rustup toolchain list: $(rustup toolchain list 2>/dev/null | tr '\n' ' '))." >&2
            echo "       Set HOPCORE_SKIP_FUZZ=1 to skip the fuzz build." >&2
            exit 1
        fi
        if ! cargo fuzz --version >/dev/null 2>&1; then
            echo "cargo-fuzz missing: cargo install cargo-fuzz --locked"
            cargo install cargo-fuzz --locked
        fi
        cargo +nightly --version
        cargo fuzz --version
        (cd fuzz && cargo +nightly fuzz build)
    fi
fi

section "all checks passed"
