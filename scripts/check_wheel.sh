#!/usr/bin/env bash
# Installs the newest wheel from target/wheels (scripts/build_wheel.sh) into a fresh
# virtualenv and runs the default job with the installed suf-run, from the repository root
# (the config's paths are relative to it), writing into a temp dir. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
wheel=$(ls -t target/wheels/suf-*.whl 2>/dev/null | head -1 || true)
[ -n "$wheel" ] || { echo "check_wheel: no wheel in target/wheels (run scripts/build_wheel.sh)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --no-index "$wheel"
export PATH="$tmp/venv/bin:$PATH"
for tool in suf-compile suf-run; do
  where=$(command -v "$tool")
  [ "$where" = "$tmp/venv/bin/$tool" ] || { echo "check_wheel: $tool resolves to $where, not the virtualenv" >&2; exit 1; }
  "$tool" --version
done
echo "wheel: $wheel ($(du -h "$wheel" | cut -f1))"
start=$(date +%s)
suf-run --config configs/smoke.json --out-json "$tmp/smoke.json" --out-md "$tmp/smoke.md"
echo "default job with the installed suf-run: $(( $(date +%s) - start )) s"
cat "$tmp/smoke.md"
