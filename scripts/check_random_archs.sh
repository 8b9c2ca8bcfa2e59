#!/usr/bin/env bash
# Export random-weight models of the exact Table 4 architectures and rewrite each with
# suf-compile at its Table 4 bitwidth: checks that the compiler handles the full-size graphs
# (GPT-Neo-1.3B with external data included). Needs torch/transformers/onnx (GPU machine).
# Usage: bash scripts/check_random_archs.sh SUF_COMPILE OUT_DIR
set -euo pipefail
compiler=$1 out=$2
mkdir -p "$out"
for spec in bert-tiny:37 bert-base:50 bert-large:50 gpt2:50 gpt-neo-1.3b:51; do
  arch=${spec%%:*} n=${spec##*:}
  TIMEFORMAT="random-$arch export: %R s"
  time (python3 scripts/export_onnx.py --random-arch "$arch" --out "$out/random-$arch.onnx" 2>&1 | grep -v -i warn | grep RANDOM)
  TIMEFORMAT="random-$arch suf-compile: %R s"
  time ("$compiler" "$out/random-$arch.onnx" --n-bits "$n" \
      -o "$out/random-$arch.suf.onnx" --dump "$out/random-$arch.suf.txt" | grep -v "^    \|^normalised")
  du -sh "$out"/random-$arch.*
done
