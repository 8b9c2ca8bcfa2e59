#!/usr/bin/env python3
"""Combine the substitute-model runs into results/substitutes.{json,md}.

Inputs, all produced on the GPU machine by scripts/device_substitutes.sh (README
"Substitute models"):
  results/levels/minilm-{sst2,mrpc}.levels.json   suf-run, levels output, ring, sigma
  results/levels/smollm2-135m.{output,ring,sigma}.json   suf-run, one level each
  results/substitutes-raw/pred-<row>.jsonl        suf-run --predictions-out of the run
                                                  that holds level output
  results/substitutes-raw/<row>.pytorch.json      PyTorch accuracy and per-example
                                                  predictions of the same ONNX

Adds to each row a measured "pytorch" entry and the per-example comparison of tract float vs
PyTorch predictions (issue 6: they must agree within 0.2 pp). Refuses inputs that do not fit
together: another ONNX (sha256), another binary (git_commit), a dirty or unknown build, or a
run that did not finish.
Usage: python3 scripts/substitutes_report.py
"""
import json
import os

from report_io import fail, load, write

RAW = "results/substitutes-raw"
LEVELS = "results/levels"
OUT = "results"
# row -> the level reports that hold it (the first one holds level output and the predictions)
SOURCES = {
    "minilm-sst2": ["minilm-sst2.levels.json"],
    "minilm-mrpc": ["minilm-mrpc.levels.json"],
    "smollm2-135m": ["smollm2-135m.output.json", "smollm2-135m.ring.json", "smollm2-135m.sigma.json"],
}
NEAREST = {"minilm-sst2": "BERT-tiny SST-2", "minilm-mrpc": "BERT-tiny MRPC", "smollm2-135m": "Llama2-7B LAMBADA"}


def merged_row(row_id, metas):
    """One row with every level's results, from the reports that hold it."""
    row = None
    for name in SOURCES[row_id]:
        report = load(os.path.join(LEVELS, name))
        meta = report["meta"]
        commit = meta.get("git_commit", "unknown")
        if commit == "unknown" or commit.endswith("-dirty"):
            fail(f"{name}: built from {commit!r}, not a clean commit")
        if not meta.get("complete"):
            fail(f"{name}: the run did not finish")
        metas.append({"file": f"{LEVELS}/{name}", **meta})
        found = [r for r in report["rows"] if r["id"] == row_id]
        if len(found) != 1:
            fail(f"{name}: no row {row_id}")
        r = found[0]
        if row is None:
            row = r
            continue
        for key in ("model_sha256", "examples", "n_bits"):
            if r[key] != row[key]:
                fail(f"{name}: {key} {r[key]} differs from {SOURCES[row_id][0]}'s {row[key]}")
        if r["float"]["acc"] != row["float"]["acc"]:
            fail(f"{name}: float accuracy differs from {SOURCES[row_id][0]}'s")
        row["suf"].update(r["suf"])
        row["min_bits"] = {**(row.get("min_bits") or {}), **(r.get("min_bits") or {})}
    return row


def main():
    metas, rows = [], []
    for row_id in SOURCES:
        row = merged_row(row_id, metas)
        torch = load(os.path.join(RAW, f"{row_id}.pytorch.json"))
        with open(os.path.join(RAW, f"pred-{row_id}.jsonl")) as f:
            preds = sorted((json.loads(l) for l in f if l.strip()), key=lambda p: p["index"])
        if not len(preds) == row["examples"] == len(torch["pytorch_predictions"]):
            fail(f"{row_id}: {len(preds)} predictions, {row['examples']} examples, "
                 f"{len(torch['pytorch_predictions'])} PyTorch predictions")
        if torch["onnx_sha256"] != row["model_sha256"]:
            fail(f"{row_id}: suf-run evaluated another ONNX than PyTorch")
        differ = [p["index"] for p in preds if p["float"] != torch["pytorch_predictions"][p["index"]]]
        row["pytorch"] = {"acc": torch["pytorch_acc"], "f1": torch.get("pytorch_f1"),
                          "source": f"{torch['script']} on {torch['device']}, torch {torch['torch']}, "
                                    f"transformers {torch['transformers']}",
                          "onnx_sha256": torch["onnx_sha256"]}
        row["float_vs_pytorch"] = {"differing_examples": differ, "agreement": 1 - len(differ) / len(preds),
                                   "acc_delta_pp": round(100 * (row["float"]["acc"] - torch["pytorch_acc"]), 4)}
        row["substitute"] = True
        rows.append(row)
    commits = sorted({m["git_commit"] for m in metas})
    report = {"meta": {"note": "substitute models, NOT the Table 4 checkpoints (see models/manifest.json)",
                       "git_commits": commits, "runs": metas}, "rows": rows}
    write(os.path.join(OUT, "substitutes.json"), json.dumps(report, indent=1) + "\n")

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}"

    def min_n(r, level):
        m = (r.get("min_bits") or {}).get(level)
        if m is None:
            return "not searched"
        return str(m["min_bits"]) if m.get("min_bits") is not None else "none"

    lines = [
        "# Substitute models: real weights, real data, measured end to end",
        "",
        "**These are substitutes, not SIGMA's Table 4 checkpoints** (those cannot be downloaded here;",
        "see `../shared/models/README.md` and `models/manifest.json`). Every column but the last is",
        "measured here on the same exported ONNX (sha256 checked against the PyTorch run) and the",
        "full validation sets, f = 12, at the row's bitwidth. The SIGMA column is the nearest Table 4",
        "row with the same bitwidth, for orientation only (another model).",
        "",
        f"suf-run binaries: commit {', '.join(commits)} (clean builds); per-level reports in `results/levels/`.",
        "",
        "| Model (substitute) | Dataset | Val Size | PyTorch Acc (measured) | tract float Acc | SUF output | SUF ring | SUF sigma | "
        "min n output / ring / sigma | Bitwidth | nearest SIGMA row (PyTorch / SIGMA) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        extra = "" if r["pytorch"]["f1"] is None else f" (F1 {100 * r['pytorch']['f1']:.2f})"
        suf = r["suf"]
        lines.append(
            f"| SUBSTITUTE {r['id']} | {r['task']} | {r['examples']} | {pct(r['pytorch']['acc'])}{extra} | "
            f"{pct(r['float']['acc'])} | " + " | ".join(pct(suf[lv]["acc"]) for lv in ("output", "ring", "sigma"))
            + f" | {' / '.join(min_n(r, lv) for lv in ('output', 'ring', 'sigma'))} | {r['n_bits']} | "
            f"{NEAREST[r['id']]}: {pct(r['sigma_ref']['pytorch_acc'])} / {pct(r['sigma_ref']['sigma_acc'])} |")
    lines += ["", "Agreement of each SUF level's predictions with tract float's: " + "; ".join(
        f"{r['id']} " + ", ".join(f"{lv} {pct(r['suf'][lv]['agreement'])}%" for lv in ("output", "ring", "sigma"))
        for r in rows) + ".",
        "", "Per-example: tract float vs PyTorch predictions differ on " + ", ".join(
        f"{r['id']} {len(r['float_vs_pytorch']['differing_examples'])}/{r['examples']}" for r in rows) + " examples."]
    word = [r for r in rows if "word_acc" in r["float"]]
    for r in word:
        lines += ["", f"Whole-word LAMBADA accuracy ({r['id']}): float {pct(r['float']['word_acc'])}, "
                  f"SUF output {pct(r['suf']['output'].get('word_acc'))}."]
    lines += ["", "Commands: README section \"Substitute models\"; `results/levels/README.md`."]
    text = "\n".join(lines) + "\n"
    write(os.path.join(OUT, "substitutes.md"), text)
    print(text, end="")


if __name__ == "__main__":
    main()
