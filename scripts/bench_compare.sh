#!/usr/bin/env bash
# Two builds of suf-bench side by side in ONE invocation, on the same ONNX files and token
# tensors: "did this change make levels ring/sigma slower?" (issue 11 acceptance 5).
# Each binary runs single-threaded on its own core (taskset), both at the same time, so
# machine drift hits both alike; within each binary the graphs run in interleaved rounds and
# X/float is the median of per-round ratios. The table compares the binaries' X/float ratios
# (and their absolute times) per model, batch and level.
# Usage: bash scripts/bench_compare.sh OLD_SUF_BENCH NEW_SUF_BENCH OUT_DIR [ARCH:N_BITS ...]
#   (default bert-base:50 gpt2:50; models from scripts/export_onnx.py --random-arch, in MODEL_DIR)
# Env: LEVELS (default ring,sigma), BATCH (default 8), ITERS (default 3), OLD_COMMIT (label
# for an old binary that cannot name its own commit).
set -euo pipefail
command="bash scripts/bench_compare.sh $*"
old=$1 new=$2 out=$3; shift 3
specs=("$@"); [ ${#specs[@]} -eq 0 ] && specs=(bert-base:50 gpt2:50)
models=${MODEL_DIR:-models}
mkdir -p "$out" "$models"
for spec in "${specs[@]}"; do
  arch=${spec%%:*} n=${spec##*:}
  model="$models/random-$arch.onnx"
  [ -f "$model" ] || python3 scripts/export_onnx.py --random-arch "$arch" --out "$model" 2>&1 | grep RANDOM || true
  args=(--model "$model" --name "$arch" --n-bits "$n" --levels "${LEVELS:-ring,sigma}"
        --batch "${BATCH:-8}" --seq-len 128 --warmup 1 --iters "${ITERS:-3}")
  taskset -c 2 "$old" "${args[@]}" --out-json "$out/$arch.old.json" > "$out/$arch.old.log" 2>&1 &
  p_old=$!
  taskset -c 4 "$new" "${args[@]}" --out-json "$out/$arch.new.json" > "$out/$arch.new.log" 2>&1 &
  p_new=$!
  wait $p_old || { echo "old binary failed on $arch:"; cat "$out/$arch.old.log"; exit 1; }
  wait $p_new || { echo "new binary failed on $arch:"; cat "$out/$arch.new.log"; exit 1; }
done
python3 - "$out" "$command" "${specs[@]}" <<'PY'
import json, os, sys
out, command, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = ["| model | batch | graph | old ms | new ms | new/old | old X/float | new X/float | change of X/float |",
        "|---|---|---|---|---|---|---|---|---|"]
meta = {}
for spec in specs:
    arch = spec.split(":")[0]
    rep = {k: json.load(open(f"{out}/{arch}.{k}.json")) for k in ("old", "new")}
    meta = {k: (r["git_commit"], r["machine"]) for k, r in rep.items()}
    # A build from before runner/build.rs read its commit from the working directory (none on
    # a copied tree): OLD_COMMIT names it.
    if os.environ.get("OLD_COMMIT"):
        meta["old"] = (os.environ["OLD_COMMIT"] + " (given as OLD_COMMIT)", meta["old"][1])
    for t_old in rep["old"]["timings"]:
        t_new = next(t for t in rep["new"]["timings"]
                     if t["graph"] == t_old["graph"] and t["batch"] == t_old["batch"])
        fo, fn = t_old.get("over_float"), t_new.get("over_float")
        change = f"{(fn / fo - 1) * 100:+.1f}%" if fo and fn else ""
        fmt = lambda x: f"{x:.2f}" if x else ""
        rows.append(f"| {arch} | {t_old['batch']} | {t_old['graph']} | {t_old['median_ms']:.1f} | "
                    f"{t_new['median_ms']:.1f} | {t_new['median_ms'] / t_old['median_ms']:.3f} | "
                    f"{fmt(fo)} | {fmt(fn)} | {change} |")
md = [f"# suf-bench, two builds side by side", "",
      f"Command: `{command}`", "",
      f"old: commit `{meta['old'][0]}`; new: commit `{meta['new'][0]}`; machine: {meta['new'][1]}; "
      "one thread each, both running at once on separate cores.", ""] + rows
open(f"{out}/compare.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
