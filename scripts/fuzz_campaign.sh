#!/usr/bin/env bash
# The long fuzz campaign (issue 14) from a prebuilt test binary, on every core.
#
#   scripts/fuzz_campaign.sh SEED INPUTS REPORT [TEST_BINARY]
#
# TEST_BINARY defaults to the newest target/release/deps/fuzz_compile-* executable; build it
# with `cargo test --release --workspace --test fuzz_compile --no-run`. No Rust is needed to
# run it. The fixtures are read from SUF_FIXTURES_DIR (default: tests/fixtures beside this
# script), since the path baked into the binary is the build machine's checkout.
# Other knobs: SUF_FUZZ_THREADS (default nproc), SUF_FUZZ_INPUT_TIMEOUT (s per input,
# default 20), SUF_FUZZ_MAX_HANGS (default 4), SUF_FUZZ_PROGRESS_SECONDS (default 60).
# Exit status: the test's (0 = no panic and no hang).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 SEED INPUTS REPORT [TEST_BINARY]" >&2
    exit 2
fi
seed=$1 inputs=$2 report=$3
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${4:-}
if [ -z "$bin" ]; then
    bin=$(ls -t "$root"/target/release/deps/fuzz_compile-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "no fuzz_compile test binary (give its path, or build it with cargo test --release --workspace --test fuzz_compile --no-run)" >&2
    exit 2
fi
export SUF_FIXTURES_DIR=${SUF_FIXTURES_DIR:-$root/tests/fixtures}
if ! ls "$SUF_FIXTURES_DIR"/*.onnx >/dev/null 2>&1; then
    echo "no fixtures (*.onnx) in $SUF_FIXTURES_DIR; set SUF_FIXTURES_DIR" >&2
    exit 2
fi
export SUF_FUZZ_SEED=$seed SUF_FUZZ_INPUTS=$inputs
export SUF_FUZZ_THREADS=${SUF_FUZZ_THREADS:-$(nproc)}
mkdir -p "$(dirname "$report")"
{
    echo "# fuzz campaign: seed $seed, $inputs inputs, $SUF_FUZZ_THREADS threads, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# binary $bin (sha256 $(sha256sum "$bin" | cut -d' ' -f1)), fixtures $SUF_FIXTURES_DIR"
    echo "# commit $(git -C "$root" rev-parse HEAD 2>/dev/null || echo 'n/a (no git checkout here)') on $(uname -n), $(nproc) cores"
} | tee "$report"
set +e
"$bin" fuzz_campaign --exact --ignored --nocapture 2>&1 | tee -a "$report"
rc=${PIPESTATUS[0]}
set -e
echo "# exit status $rc" | tee -a "$report"
exit "$rc"
