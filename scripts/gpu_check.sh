#!/usr/bin/env bash
# The GPU checks of `--device cuda` (issue 12), for a machine with an NVIDIA GPU; never in CI.
#   1. bit-identity: every graph (float and levels output, ring, sigma) of the test fixtures
#      and of random-weight BERT-base / GPT-2 runs one batch on the CPU and on the GPU, and
#      every SUF tensor is compared bit for bit (`suf-bench --compare-devices`; exit 1 on a
#      difference at levels ring/sigma or on a differing prediction);
#   2. speed: `suf-bench --device cuda` at batch 8 and 64 (float and every level), with the
#      placement of every node (what stayed on the CPU, every copy per run) in the JSON.
# Usage: bash scripts/gpu_check.sh OUT_DIR [SUF_BENCH]   (default target/release/suf-bench)
# Env: MODEL_DIR (random exports, default models), ARCHS (default "bert-base gpt2"),
#      N_BITS (default 50), ITERS (default 5), STEP_TIMEOUT (seconds per speed step, 240),
#      FULL_LOGITS=0 skips GPT-2 with the exported full logits.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1
bench=${2:-target/release/suf-bench}
mkdir -p "$out"
log="$out/gpu_check.log"
: > "$log"
say() { echo "$*" | tee -a "$log"; }

. scripts/cuda_env.sh
say "# $(date -u +%FT%TZ) $("$bench" --version)"
say "# command: bash scripts/gpu_check.sh $*"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$log"
n=${N_BITS:-50}
status=0

say "## 1. CPU vs cuda, bit for bit"
for m in tests/fixtures/*.onnx; do
  name=$(basename "$m" .onnx)
  say "### $name"
  "$bench" --model "$m" --name "$name" --levels output,ring,sigma --batch 2 --seq-len 16 \
    --n-bits "$n" --compare-devices --out-json "$out/compare-$name.json" 2>&1 | tee -a "$log" \
    || status=1
done
models=${MODEL_DIR:-models}
mkdir -p "$models"
for arch in ${ARCHS:-bert-base gpt2}; do
  model="$models/random-$arch.onnx"
  [ -f "$model" ] || python3 scripts/export_onnx.py --random-arch "$arch" --out "$model" 2>&1 | grep -i random | tee -a "$log"
  say "### random $arch"
  "$bench" --model "$model" --name "$arch" --levels output,ring,sigma --batch 8 --seq-len 128 \
    --n-bits "$n" --compare-devices --out-json "$out/compare-$arch.json" 2>&1 | tee -a "$log" \
    || status=1
done

say "### fixtures, level ring with every error bound widened by 2^200 (the CPU recomputation)"
for m in tests/fixtures/*.onnx; do
  name=$(basename "$m" .onnx)
  SUF_GPU_RING_SLACK=200 "$bench" --model "$m" --name "$name-slack" --levels ring --batch 2 \
    --seq-len 16 --n-bits "$n" --compare-devices --out-json "$out/compare-$name-slack.json" 2>&1 \
    | tee -a "$log" || status=1
done

say "## 2. speed on cuda"
# Each level next to float in one process (interleaved rounds, ratios per round). GPT-2 as
# suf-run runs LAMBADA rows (logits at the positions read: --logit-width 1), and once with
# the exported full logits.
step() { timeout "${STEP_TIMEOUT:-240}" "$bench" "$@" 2>&1 | tee -a "$log" || status=1; }
for arch in ${ARCHS:-bert-base gpt2}; do
  model="$models/random-$arch.onnx"
  width=(); [ "$arch" = bert-base ] || width=(--logit-width 1)
  step --model "$model" --name "$arch" --device cuda --levels output,ring,sigma "${width[@]}" \
    --batch 8,64 --seq-len 128 --warmup 1 --iters "${ITERS:-5}" --n-bits "$n" \
    --out-json "$out/bench-$arch.json"
done
[ "${FULL_LOGITS:-1}" = 0 ] || case " ${ARCHS:-bert-base gpt2} " in *" gpt2 "*)
  step --model "$models/random-gpt2.onnx" --name gpt2-full-logits --device cuda --levels output \
    --batch 8,64 --seq-len 128 --warmup 1 --iters 3 --n-bits "$n" \
    --out-json "$out/bench-gpt2-full-logits.json" ;;
esac
say "# exit $status"
exit $status
