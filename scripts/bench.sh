#!/usr/bin/env bash
# The speed benchmark (issue 5): tract float, tract SUF (output, ring, sigma) and onnxruntime
# on the same ONNX files and token tensors, one thread each, batch 1 and 8 at seq 128.
# Models are random-weight exports of the Table 4 architectures (scripts/export_onnx.py needs
# torch + transformers; speed does not depend on the weights).
# Usage: bash scripts/bench.sh SUF_BENCH OUT_DIR [ARCH:N_BITS ...]   (default: bert-tiny:37 bert-base:50 gpt2:50)
# The exported models go to MODEL_DIR (default models/, where *.onnx is not committed).
set -euo pipefail
command="bash scripts/bench.sh $*"
bench=$1 out=$2; shift 2
specs=("$@"); [ ${#specs[@]} -eq 0 ] && specs=(bert-tiny:37 bert-base:50 gpt2:50)
models=${MODEL_DIR:-models}
mkdir -p "$out" "$models"
pairs=()
for spec in "${specs[@]}"; do
  arch=${spec%%:*} n=${spec##*:}
  model="$models/random-$arch.onnx"
  [ -f "$model" ] || python3 scripts/export_onnx.py --random-arch "$arch" --out "$model" 2>&1 | grep RANDOM || true
  "$bench" --model "$model" --name "$arch" --n-bits "$n" --levels "${LEVELS:-output,ring,sigma}" \
    --batch 1,8 --seq-len 128 --warmup 1 --iters "${ITERS:-3}" ${BENCH_FLAGS:-} --out-json "$out/$arch.suf.json"
  python3 scripts/bench_ort.py --model "$model" --batch 1,8 --seq-len 128 --threads 1 \
    --warmup 1 --iters "${ITERS:-3}" --out-json "$out/$arch.ort.json"
  pairs+=(--pair "$arch" "$out/$arch.suf.json" "$out/$arch.ort.json")
done
python3 scripts/bench_report.py "${pairs[@]}" \
  --command "${ITERS:+ITERS=$ITERS }${LEVELS:+LEVELS=$LEVELS }$command" --out-json "$out/bench.json" --out-md "$out/bench.md"
