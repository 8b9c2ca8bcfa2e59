#!/usr/bin/env bash
# Whole rows, float + SUF, against onnxruntime evaluating the float graph alone (issue 13):
# in ONE invocation, on the same machine, the same data files and the same first EXAMPLES
# examples, every engine on all THREADS cores:
#   - onnxruntime: the exported float graph (full logits, every example padded to seq 128,
#     batch 8) as a user would run it (scripts/row_ort.py: load, tokenize, run, score);
#   - suf-run float + level output, and float + levels ring + sigma (EXACT_EXAMPLES examples),
#     whole runs (load, compile, optimise, evaluate), wall time measured here.
# Models: random-weight exports of the Table 4 architectures (scripts/export_onnx.py needs
# torch + transformers; the time does not depend on the weights; the data and tokenizers are
# real). Writes OUT_DIR/<arch>.{ort-K,output,exact}.json and OUT_DIR/row_bench.{json,md}.
# Usage: bash scripts/row_bench.sh OUT_DIR [SUF_RUN]   (default target/release/suf-run)
# Env: MODEL_DIR (default models), ARCHS (default "gpt2 bert-base gpt-neo-1.3b"), EXAMPLES
#      (256), NEO_EXAMPLES (GPT-Neo-1.3B's, 64), EXACT_EXAMPLES (64; 0 skips the exact levels),
#      EXACT_ARCHS (where the exact levels run, default "gpt2 bert-base bert-tiny": GPT-Neo's
#      three plans of i64 weights need ~4x its 5.3 GB), THREADS (default: every core).
set -euo pipefail
cd "$(dirname "$0")/.."
command="bash scripts/row_bench.sh $*"
out=$1
suf_run=${2:-target/release/suf-run}
models=${MODEL_DIR:-models}
threads=${THREADS:-$(nproc)}
examples=${EXAMPLES:-256}
exact=${EXACT_EXAMPLES:-64}
mkdir -p "$out" "$models"
# Fewer threads than cores: both engines pinned to the same first THREADS cores.
pin=(); [ "$threads" = "$(nproc)" ] || pin=(taskset -c "0-$((threads - 1))")
shared=../shared
pairs=()
for arch in ${ARCHS:-gpt2 bert-base gpt-neo-1.3b}; do
  model="$models/random-$arch.onnx"
  [ -f "$model" ] || python3 scripts/export_onnx.py --random-arch "$arch" --out "$model" 2>&1 | grep RANDOM || true
  case $arch in
    bert-*) task=glue/sst2 data=$shared/data/glue-sst2/dev.tsv tok=$shared/tokenizers/bert-base-uncased/tokenizer.json n=50 ;;
    *) task=lambada_openai data=$shared/data/lambada_openai/lambada_test.jsonl tok=$shared/tokenizers/gpt2/tokenizer.json n=51 ;;
  esac
  rows=$examples; case $arch in gpt-neo-*) rows=${NEO_EXAMPLES:-64} ;; esac
  run_ort() {  # EXAMPLES
    echo "## $arch: onnxruntime, $threads threads, $1 examples" >&2
    "${pin[@]}" python3 scripts/row_ort.py --model "$model" --tokenizer "$tok" --task "$task" --data "$data" \
      --max-examples "$1" --threads "$threads" --out-json "$out/$arch.ort-$1.json" >&2
  }
  run_suf() {  # LEVELS EXAMPLES NAME; a failed run is recorded (exit status, peak RSS), not fatal
    rm -f "$out/$arch.$3.json"  # a report at this path would be resumed, not re-run
    local rc=0
    /usr/bin/time -o "$out/$arch.$3.time" -f "%e %M" "${pin[@]}" "$suf_run" --model "$model" --tokenizer "$tok" \
      --task "$task" --data "$data" --n-bits "$n" --sigma-ref "$arch" --emulation "$1" --max-examples "$2" \
      --out-json "$out/$arch.$3.json" --out-md "$out/$arch.$3.md" > "$out/$arch.$3.log" 2>&1 || rc=$?
    # wall seconds, exit status, peak RSS in KiB (GNU time; also for a killed process)
    echo "$(tail -1 "$out/$arch.$3.time" | awk '{print $1}') $rc $(tail -1 "$out/$arch.$3.time" | awk '{print $2}')" > "$out/$arch.$3.wall"
    rm -f "$out/$arch.$3.time"
    [ $rc = 0 ] || echo "## $arch: suf-run --emulation $1 failed (exit $rc), see $out/$arch.$3.log" >&2
  }
  run_ort "$rows"
  echo "## $arch: suf-run float + output" >&2
  run_suf output "$rows" output
  args=(--arch "$arch" --suf output "$out/$arch.output.json" "$out/$arch.output.wall" "$out/$arch.ort-$rows.json")
  if [ "$exact" -gt 0 ] && [[ " ${EXACT_ARCHS:-gpt2 bert-base bert-tiny} " == *" $arch "* ]]; then
    [ "$exact" = "$rows" ] || run_ort "$exact"
    echo "## $arch: suf-run float + ring + sigma, $exact examples" >&2
    run_suf ring,sigma "$exact" exact
    args+=(--suf exact "$out/$arch.exact.json" "$out/$arch.exact.wall" "$out/$arch.ort-$exact.json")
  fi
  pairs+=("${args[@]}" --end)
done
python3 scripts/row_bench_report.py --command "$command" --threads "$threads" "${pairs[@]}" \
  --out-json "$out/row_bench.json" --out-md "$out/row_bench.md"
