#!/usr/bin/env bash
# Issue 6 pipeline on the GPU machine, one stage per call (the model packages are larger than
# one call may carry, so they travel in chunks and are stashed between calls). A call carries
# at most 64 MiB with the tracked tree (~43 MB), so chunks of ~21 MB: e.g. the GGUF as
# `xz -6` (90.5 MB) split into 5 (`split -b 21000000 -d`), one chunk per call, calls back to
# back (the machine is released after 30 s idle, and the stash with it).
#   stash DIR         move a carried chunk folder into /root/stash
#   minilm            reassemble MiniLM, fine-tune SST-2 and MRPC, export, PyTorch eval
#   smollm2           reassemble the GGUF, dequantize, export, PyTorch LAMBADA eval
#   suf ROWS [ARGS]   run suf-run (carried binary .dev/bin/suf-run) on configs/substitutes.json
set -euo pipefail
cd "$(dirname "$0")/.."
STASH=/root/stash
stage=$1; shift
# The checkout's ../shared does not travel: a copy does, as .dev/shared.
[ -e ../shared ] || { [ -d $STASH/shared ] && ln -s $STASH/shared ../shared; } || true
case "$stage" in
  stash)
    mkdir -p $STASH && cp -r "$1"/. $STASH/ && ls -la $STASH ;;
  minilm)
    mkdir -p /tmp/minilm && cat $STASH/minilm.safetensors.part-* > /tmp/minilm/model.safetensors
    cp $STASH/minilm-model/* /tmp/minilm/
    mkdir -p models
    for task in sst2 mrpc; do
      python3 scripts/finetune_minilm.py --task $task --model-dir /tmp/minilm --data-dir ../shared/data \
        --tokenizer ../shared/tokenizers/bert-base-uncased/tokenizer.json --out-dir models
    done ;;
  smollm2)
    python3 -m pip install -q --no-index --no-deps --target /tmp/site $STASH/gguf-*.whl
    export PYTHONPATH=/tmp/site
    mkdir -p /tmp/smollm2 && cat $STASH/smollm2.gguf.part-* > /tmp/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    mkdir -p models
    python3 scripts/export_smollm2.py --gguf-dir /tmp/smollm2 --data ../shared/data/lambada_openai/lambada_test.jsonl --out-dir models ;;
  suf)
    rows=$1; shift
    .dev/bin/suf-run --config configs/substitutes.json --rows "$rows" "$@" ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
