#!/usr/bin/env bash
# Builds the pip wheel of suf's command-line tools (pyproject.toml: maturin, bindings = "bin")
# into target/wheels/. maturin comes from PyPI into a build virtualenv under .dev/ (ignored).
# The build uses the release profile and target/ of the README's commands, so after those it
# compiles little. Extra arguments go to `maturin build`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SUF_BUILD_VENV:-.dev/build-venv}
if ! [ -x "$venv/bin/maturin" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'maturin>=1.5,<2'
fi
"$venv/bin/maturin" build --release --out target/wheels "$@"
ls -l target/wheels/suf-*.whl
