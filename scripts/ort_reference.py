#!/usr/bin/env python3
"""Reference run of the float ONNX graphs in onnxruntime, compared with suf-run's predictions.

Runs the same ONNX file on the same inputs as `suf-run` (same data parsing, same tokenizer.json,
same truncation/padding and LAMBADA protocol, re-implemented here independently with the Python
`tokenizers` package) and compares every example's prediction with the float predictions that
`suf-run --predictions-out FILE` wrote. Decoder prompts run one per call: unpadded when the
model's sequence axis is symbolic, else right-padded with a zero attention mask; classifier
inputs run in batches, like the runner's.

    pip install onnxruntime tokenizers numpy
    suf-run --config configs/smoke.json --out-json /tmp/s.json --predictions-out /tmp/p.jsonl --emulation none
    python3 scripts/ort_reference.py --config configs/smoke.json --predictions /tmp/p.jsonl \
        --out-json results/reference/smoke.json --out-md results/reference/smoke.md

Exit status 1 when any row's agreement is below --min-agreement (default 0.999).
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

GLUE_COLUMNS = {
    "glue/sst2": ("sentence", None, "label"),
    "glue/mrpc": ("#1 String", "#2 String", "Quality"),
    "glue/qnli": ("question", "sentence", "label"),
}


def parse_label(task, raw):
    raw = raw.strip()
    if task == "glue/qnli" and raw in ("entailment", "not_entailment"):
        return 0 if raw == "entailment" else 1
    if raw in ("0", "1"):
        return int(raw)
    raise ValueError(f"invalid label {raw!r} for {task}")


def read_glue_tsv(task, path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = [h.strip() for h in lines[0].rstrip("\r").split("\t")]
    a_name, b_name, label_name = GLUE_COLUMNS[task]
    a_ix = header.index(a_name)
    b_ix = header.index(b_name) if b_name else None
    l_ix = header.index(label_name)
    out = []
    for no, line in enumerate(lines[1:], start=2):
        fields = line.rstrip("\r").split("\t")
        if len(fields) != len(header):
            raise ValueError(f"{path}:{no}: expected {len(header)} fields, found {len(fields)}")
        out.append((fields[a_ix], fields[b_ix] if b_ix is not None else None, parse_label(task, fields[l_ix])))
    return out


def read_lambada(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def argmax(v):
    return int(np.argmax(v))  # first of ties, like the runner


def session(model_path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_path, sess_options=opts, providers=["CPUExecutionProvider"])


def feed(sess, ids, mask, types):
    out = {}
    for inp in sess.get_inputs():
        dtype = np.int32 if "int32" in inp.type else np.int64
        if inp.name == "input_ids":
            out[inp.name] = ids.astype(dtype)
        elif inp.name == "attention_mask":
            out[inp.name] = mask.astype(dtype)
        elif inp.name == "token_type_ids":
            out[inp.name] = types.astype(dtype)
        elif inp.name == "position_ids":
            out[inp.name] = np.tile(np.arange(ids.shape[1]), (ids.shape[0], 1)).astype(dtype)
        else:
            raise ValueError(f"model input {inp.name!r} is not one this script can fill")
    return out


def logits_output(sess):
    names = [o.name for o in sess.get_outputs()]
    return ["logits"] if "logits" in names else [names[0]]


def run_classifier(sess, tok, examples, seq_len, batch):
    tok.enable_truncation(max_length=seq_len, strategy="longest_first")
    pad_id = tok.token_to_id("[PAD]") or 0
    tok.enable_padding(length=seq_len, pad_id=pad_id, pad_token="[PAD]")
    encs = [tok.encode(a, b) if b is not None else tok.encode(a) for a, b, _ in examples]
    preds = []
    out_names = logits_output(sess)
    for s in range(0, len(encs), batch):
        chunk = encs[s : s + batch]
        ids = np.array([e.ids for e in chunk], dtype=np.int64)
        mask = np.array([e.attention_mask for e in chunk], dtype=np.int64)
        types = np.array([e.type_ids for e in chunk], dtype=np.int64)
        logits = sess.run(out_names, feed(sess, ids, mask, types))[0]
        preds.extend(argmax(row) for row in logits)
    labels = [lab for _, _, lab in examples]
    return preds, labels, None


def final_word_len(tok, text, full):
    trimmed = text.rstrip()
    cut = max(trimmed.rfind(c) for c in " \t\n\r")
    if cut < 0:
        return 1
    ctx = tok.encode(trimmed[:cut], add_special_tokens=False).ids
    if len(full) > len(ctx) and full[: len(ctx)] == ctx:
        n = len(full) - len(ctx)
    else:
        n = len(tok.encode(trimmed[cut:], add_special_tokens=False).ids)
    return min(max(n, 1), len(full) - 1)


def run_lambada(sess, tok, texts, seq_len):
    tok.no_padding()
    tok.no_truncation()
    preds, labels, words = [], [], []
    out_names = logits_output(sess)
    # Exports with a fixed sequence axis need right-padding (masked); others run unpadded.
    seq_dim = sess.get_inputs()[0].shape[1]
    fixed_len = seq_dim if isinstance(seq_dim, int) else None
    for text in texts:
        full = tok.encode(text, add_special_tokens=False).ids
        label = full[-1]
        prompt = full[:-1][-seq_len:]
        k = min(final_word_len(tok, text, full), len(prompt))
        word = full[len(full) - k :]
        ids = np.zeros((1, fixed_len or len(prompt)), dtype=np.int64)
        ids[0, : len(prompt)] = prompt
        mask = np.zeros_like(ids)
        mask[0, : len(prompt)] = 1
        logits = sess.run(out_names, feed(sess, ids, mask, np.zeros_like(ids)))[0][0]
        preds.append(argmax(logits[len(prompt) - 1]))
        labels.append(label)
        words.append(all(argmax(logits[len(prompt) - k + j]) == word[j] for j in range(k)))
    return preds, labels, words


def load_predictions(path):
    by_row = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            by_row.setdefault(p["row"], {})[p["index"]] = p
    return by_row


def resolve(p):
    return p if os.path.isabs(p) else os.path.join(os.getcwd(), p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--predictions", required=True, help="suf-run --predictions-out file")
    ap.add_argument("--rows", help="comma-separated row ids (default: every row in the predictions file)")
    ap.add_argument("--max-examples", type=int)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-agreement", type=float, default=0.999)
    ap.add_argument("--out-json", required=True)
    ap.add_argument("--out-md")
    args = ap.parse_args()

    with open(args.config, encoding="utf-8") as f:
        config = json.load(f)
    seq_len = config["global"]["seq_len"]
    runner = load_predictions(args.predictions)
    wanted = args.rows.split(",") if args.rows else None
    results = []
    ok = True
    for row in config["rows"]:
        rid = row["id"]
        if (wanted and rid not in wanted) or (not wanted and rid not in runner):
            continue
        if rid not in runner:
            sys.exit(f"ort_reference: row {rid!r} has no predictions in {args.predictions}")
        t0 = time.time()
        sess = session(resolve(row["model"]), args.threads)
        tok = Tokenizer.from_file(resolve(row["tokenizer"]))
        if row["task"] == "lambada_openai":
            data = read_lambada(resolve(row["data"]))
        else:
            data = read_glue_tsv(row["task"], resolve(row["data"]))
        val_size = len(data)
        indices = sorted(runner[rid])
        if args.max_examples is not None:
            indices = [i for i in indices if i < args.max_examples]
        chosen = [data[i] for i in indices]
        if row["task"] == "lambada_openai":
            preds, labels, words = run_lambada(sess, tok, chosen, seq_len)
        else:
            preds, labels, words = run_classifier(sess, tok, chosen, seq_len, args.batch_size)
        theirs = [runner[rid][i] for i in indices]
        same = sum(int(p == t["float"]) for p, t in zip(preds, theirs))
        same_label = sum(int(lab == t["label"]) for lab, t in zip(labels, theirs))
        n = len(indices)
        res = {
            "id": rid,
            "model": row["model"],
            "val_size": val_size,
            "examples": n,
            "identical_predictions": same,
            "agreement": same / n if n else 0.0,
            "identical_labels": same_label,
            "ort_acc": sum(int(p == lab) for p, lab in zip(preds, labels)) / n if n else 0.0,
            "runner_float_acc": sum(int(t["float"] == t["label"]) for t in theirs) / n if n else 0.0,
            "seconds": round(time.time() - t0, 2),
        }
        if words is not None:
            res["ort_word_acc"] = sum(words) / n if n else 0.0
            res["runner_float_word_acc"] = sum(int(bool(t.get("float_word_correct"))) for t in theirs) / n if n else 0.0
            res["identical_word_outcomes"] = sum(int(w == bool(t.get("float_word_correct"))) for w, t in zip(words, theirs))
        if res["agreement"] < args.min_agreement or same_label != n:
            ok = False
        print(f"{rid}: {same}/{n} identical predictions ({res['agreement']:.4%}), "
              f"ort acc {res['ort_acc']:.4f}, runner float acc {res['runner_float_acc']:.4f}", file=sys.stderr)
        results.append(res)
    report = {
        "meta": {
            "tool": "scripts/ort_reference.py",
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()} {platform.processor()}".strip(),
            "config": args.config,
            "predictions": args.predictions,
            "command": " ".join(sys.argv),
            "min_agreement": args.min_agreement,
        },
        "rows": results,
    }
    tmp = args.out_json + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.out_json)
    if args.out_md:
        lines = ["# onnxruntime reference vs suf-run (float graph)", "",
                 f"onnxruntime {ort.__version__}; command: `{' '.join(sys.argv)}`", "",
                 "| Row | Val Size | Examples | Identical predictions | Agreement | ORT Acc | suf-run Float Acc | Whole-word ORT / suf-run |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in results:
            ww = (f"{r['ort_word_acc']:.4f} / {r['runner_float_word_acc']:.4f}" if "ort_word_acc" in r else "")
            lines.append(f"| {r['id']} | {r['val_size']} | {r['examples']} | {r['identical_predictions']} | "
                         f"{r['agreement']:.4%} | {r['ort_acc']:.4f} | {r['runner_float_acc']:.4f} | {ww} |")
        tmp = args.out_md + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, args.out_md)
    if not results:
        sys.exit("ort_reference: no rows compared")
    if not ok:
        sys.exit(f"ort_reference: agreement below {args.min_agreement} (or labels differ) on some row")


if __name__ == "__main__":
    main()
