#!/usr/bin/env python3
"""Combine the substitute-model runs into results/substitutes.{json,md}.

Inputs (results/substitutes-raw/, all produced on the GPU machine by
scripts/device_substitutes.sh, see README "Substitute models"):
  substitutes-minilm.json   suf-run report for minilm-sst2 and minilm-mrpc
  smollm2-merged.json       suf-run merge of the three --shard K/3 reports for smollm2-135m
  pred-*.jsonl              suf-run --predictions-out (per-example float / SUF predictions)
  *.pytorch.json            PyTorch accuracy and per-example predictions of the same model

Adds to each suf-run row a measured "pytorch" entry and the per-example comparison of
tract float vs PyTorch predictions (issue 6: they must agree within 0.2 pp).
Usage: python3 scripts/substitutes_report.py
"""
import json
import os

RAW = "results/substitutes-raw"
OUT = "results"


def load_jsonl(names):
    rows = []
    for n in names:
        with open(os.path.join(RAW, n)) as f:
            rows += [json.loads(l) for l in f if l.strip()]
    return rows


def main():
    minilm = json.load(open(os.path.join(RAW, "substitutes-minilm.json")))
    smollm = json.load(open(os.path.join(RAW, "smollm2-merged.json")))
    preds = load_jsonl(["pred-minilm.jsonl", "pred-smollm2-shard0.jsonl",
                        "pred-smollm2-shard1.jsonl", "pred-smollm2-shard2.jsonl"])
    rows = minilm["rows"] + smollm["rows"]
    for row in rows:
        torch = json.load(open(os.path.join(RAW, f"{row['id']}.pytorch.json")))
        mine = sorted((p for p in preds if p["row"] == row["id"]), key=lambda p: p["index"])
        assert len(mine) == row["examples"] == len(torch["pytorch_predictions"]), row["id"]
        differ = [p["index"] for p in mine if p["float"] != torch["pytorch_predictions"][p["index"]]]
        row["pytorch"] = {"acc": torch["pytorch_acc"], "f1": torch.get("pytorch_f1"),
                          "source": f"{torch['script']} on {torch['device']}, torch {torch['torch']}, transformers {torch['transformers']}",
                          "onnx_sha256": torch["onnx_sha256"]}
        assert torch["onnx_sha256"] == row["model_sha256"], f"{row['id']}: suf-run evaluated another ONNX"
        row["float_vs_pytorch"] = {"differing_examples": differ, "agreement": 1 - len(differ) / len(mine),
                                   "acc_delta_pp": round(100 * (row["float"]["acc"] - torch["pytorch_acc"]), 4)}
        row["substitute"] = True
    report = {"meta": {"note": "substitute models, NOT the Table 4 checkpoints (see models/manifest.json)",
                       "runs": [minilm["meta"], smollm["meta"]]}, "rows": rows}
    tmp = os.path.join(OUT, ".substitutes.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, os.path.join(OUT, "substitutes.json"))

    lines = [
        "# Substitute models: real weights, real data, measured end to end",
        "",
        "**These are substitutes, not SIGMA's Table 4 checkpoints** (those cannot be downloaded here;",
        "see `../shared/models/README.md` and `models/manifest.json`). PyTorch, tract float and SUF",
        "columns are all measured on the same exported ONNX (sha256 checked) and the full validation",
        "sets; SUF = emulation level `output`, f = 12. The SIGMA column is the nearest Table 4 row",
        "with the same bitwidth, for orientation only.",
        "",
        "| Model (substitute) | Dataset | Val Size | PyTorch Acc | tract float Acc | SUF Acc | SUF-float (pp) | float-PyTorch (pp) | float/SUF agreement | Bitwidth | nearest SIGMA row (PyTorch / SIGMA) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nearest = {"minilm-sst2": "BERT-tiny SST-2", "minilm-mrpc": "BERT-tiny MRPC", "smollm2-135m": "Llama2-7B LAMBADA"}
    for r in rows:
        s = r["suf"]["output"]
        extra = ""
        if r["pytorch"]["f1"] is not None:
            extra = f" (F1 {100 * r['pytorch']['f1']:.2f})"
        lines.append(
            f"| SUBSTITUTE {r['id']} | {r['task']} | {r['examples']} | {100 * r['pytorch']['acc']:.2f}{extra} | "
            f"{100 * r['float']['acc']:.2f} | {100 * s['acc']:.2f} | {100 * (s['acc'] - r['float']['acc']):+.2f} | "
            f"{r['float_vs_pytorch']['acc_delta_pp']:+.2f} | {100 * s['agreement']:.2f} | {r['n_bits']} | "
            f"{nearest[r['id']]}: {100 * r['sigma_ref']['pytorch_acc']:.2f} / {100 * r['sigma_ref']['sigma_acc']:.2f} |")
    lines += ["", "Per-example: tract float vs PyTorch predictions differ on " + ", ".join(
        f"{r['id']} {len(r['float_vs_pytorch']['differing_examples'])}/{r['examples']}" for r in rows) + " examples.",
        "", "Whole-word LAMBADA accuracy (smollm2-135m): float "
        + f"{100 * rows[-1]['float']['word_acc']:.2f}, SUF {100 * rows[-1]['suf']['output']['word_acc']:.2f}.", "",
        "Commands: see README section \"Substitute models\"."]
    tmp = os.path.join(OUT, ".substitutes.md.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, os.path.join(OUT, "substitutes.md"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
