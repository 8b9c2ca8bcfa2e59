#!/usr/bin/env python3
"""onnxruntime side of scripts/row_bench.sh: a whole row as a user would run the exported
float graph: read the dataset file, tokenize (the protocol of SPEC section 3, as suf-run does),
pad every example to the export's seq_len, run batches with onnxruntime on all the given
threads, score. Writes the wall time of each phase, the accuracy and the machine as JSON.

  python3 scripts/row_ort.py --model M.onnx --tokenizer T.json --task lambada_openai \
      --data ../shared/data/lambada_openai/lambada_test.jsonl --max-examples 256 --threads 16 --out-json o.json
"""
import argparse
import csv
import json
import os
import platform
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

SEQ = 128


def examples(task, path, limit):
    """(inputs, label) per example; inputs are token ids (LAMBADA: the prompt)."""
    out = []
    if task == "lambada_openai":
        with open(path) as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line)["text"])
                if len(out) == limit:
                    break
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            for r in rows:
                if task == "glue/sst2":
                    out.append(((r["sentence"], None), int(r["label"])))
                elif task == "glue/mrpc":
                    out.append(((r["#1 String"], r["#2 String"]), int(r["Quality"])))
                else:
                    sys.exit(f"row_ort.py: task {task} not supported")
                if len(out) == limit:
                    break
    return out


def tokenize(task, tok, exs):
    """ids, mask, (token types), the position each example's logits are read at, label."""
    n = len(exs)
    ids = np.zeros((n, SEQ), dtype=np.int64)
    mask = np.zeros((n, SEQ), dtype=np.int64)
    types = np.zeros((n, SEQ), dtype=np.int64)
    read = np.zeros(n, dtype=np.int64)
    labels = np.zeros(n, dtype=np.int64)
    if task == "lambada_openai":
        tok.no_padding()
        tok.no_truncation()
        for i, text in enumerate(exs):
            full = tok.encode(text, add_special_tokens=False).ids
            prompt = full[:-1][-SEQ:]
            ids[i, :len(prompt)] = prompt
            mask[i, :len(prompt)] = 1
            read[i] = len(prompt) - 1
            labels[i] = full[-1]
    else:
        pad = tok.token_to_id("[PAD]")
        tok.enable_truncation(SEQ)
        tok.enable_padding(length=SEQ, pad_id=pad, pad_token="[PAD]")
        for i, ((a, b), label) in enumerate(exs):
            e = tok.encode(a, b) if b is not None else tok.encode(a)
            ids[i], mask[i], types[i] = e.ids, e.attention_mask, e.type_ids
            labels[i] = label
    return ids, mask, types, read, labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--task", required=True, choices=["lambada_openai", "glue/sst2", "glue/mrpc"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--max-examples", type=int, required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out-json", required=True)
    a = ap.parse_args()
    t0 = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    t_load = time.perf_counter()
    exs = examples(a.task, a.data, a.max_examples)
    ids, mask, types, read, labels = tokenize(a.task, Tokenizer.from_file(a.tokenizer), exs)
    t_tok = time.perf_counter()
    names = {i.name for i in sess.get_inputs()}
    correct = 0
    for s in range(0, len(exs), a.batch):
        e = slice(s, s + a.batch)
        feeds = {"input_ids": ids[e], "attention_mask": mask[e]}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = types[e]
        logits = sess.run(["logits"], feeds)[0]
        if a.task == "lambada_openai":
            pred = logits[np.arange(logits.shape[0]), read[e]].argmax(-1)
        else:
            pred = logits.argmax(-1)
        correct += int((pred == labels[e]).sum())
    t_end = time.perf_counter()
    report = {
        "engine": f"onnxruntime {ort.__version__}", "model": a.model, "task": a.task,
        "examples": len(exs), "batch": a.batch, "threads": a.threads, "seq_len": SEQ,
        "acc": correct / len(exs),
        "phases_s": {"load": t_load - t0, "tokenize": t_tok - t_load, "evaluate": t_end - t_tok},
        "total_s": t_end - t0, "python": platform.python_version(), "numpy": np.__version__,
    }
    tmp = a.out_json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, a.out_json)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
