#!/usr/bin/env python3
"""A real BERT-tiny for the default job: SIGMA Table 4's exact BERT-tiny architecture
(2 layers, hidden 128, 2 heads, FFN 512; google/bert_uncased_L-2_H-128_A-2) trained on the
real GLUE SST-2 and MRPC train sets in ../shared/data. A labelled SUBSTITUTE: the Table 4
checkpoints (takedarn/bert-tiny-sst2, M-FAC/bert-tiny-finetuned-mrpc) cannot be downloaded
on this project's machines, and no pretrained BERT-tiny exists here, so it is trained from
random initialisation: masked-LM pretraining on the two train sets' text, then fine-tuning.

The vocabulary is bert-base-uncased's, pruned to the tokens that the task's GLUE files
(train and dev) tokenize to, so the ONNX files stay small enough to commit (the masked-LM
pretraining uses the union of the two vocabularies; each classifier keeps its own rows). WordPiece is
greedy longest-match-first, so a pruned vocabulary that keeps every token a text used
tokenizes that text exactly as the full one does (checked by `prepare`).

Two steps:

  # 1. here (needs only `tokenizers` and numpy): pruned tokenizer + tokenized data
  python3 scripts/bert_tiny_substitute.py prepare --data-dir ../shared/data \\
      --tokenizer ../shared/tokenizers/bert-base-uncased/tokenizer.json \\
      --out-tokenizer 'models/bert-tiny-substitute-{task}.tokenizer.json' --out-data DIR/bert_tiny_data.npz
  # 2. on a GPU (needs torch, transformers, onnx): train, evaluate on dev, export ONNX
  python3 scripts/bert_tiny_substitute.py train --data DIR/bert_tiny_data.npz --out-dir OUT

`train` writes OUT/bert-tiny-substitute-{sst2,mrpc}.onnx and OUT/bert-tiny-substitute.json
(recipe, seeds, timings, PyTorch dev accuracy and every dev prediction), and per model the
records suf-run reads beside the ONNX file (`records` re-creates them from that log, no torch):
  python3 scripts/bert_tiny_substitute.py records --log models/bert-tiny-substitute.pytorch.json --out-dir models Exporter conventions
are the project's (SPEC.md section 7): legacy exporter, opset 17, eval mode, eager attention,
fixed seq 128, dynamic batch, inputs input_ids/attention_mask/token_type_ids, output logits.
"""
import argparse
import hashlib
import json
import os
import sys
import time

SEQ = 128
SEED = 20261201
TASKS = ("sst2", "mrpc")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# BERT-tiny of SIGMA Table 4 (google/bert_uncased_L-2_H-128_A-2)
ARCH = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
            max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu")
# A fixed recipe, chosen before any dev-set number was seen; nothing is selected on dev.
RECIPE = {
    "mlm": {"steps": 3000, "batch_size": 256, "lr": 5e-4, "warmup": 0.05, "weight_decay": 0.01,
            "mask_prob": 0.15},
    "sst2": {"epochs": 3, "batch_size": 64, "lr": 2e-4, "warmup": 0.06, "weight_decay": 0.01},
    "mrpc": {"epochs": 10, "batch_size": 32, "lr": 2e-4, "warmup": 0.1, "weight_decay": 0.01},
}


def read_glue(task, path):
    """The runner's reading of a GLUE TSV: tab-split, no quote processing, BOM tolerated."""
    with open(path, encoding="utf-8") as f:
        text = f.read().lstrip("\ufeff")
    lines = [l[:-1] if l.endswith("\r") else l for l in text.rstrip("\n").split("\n")]
    names = [n.strip() for n in lines[0].split("\t")]
    a, b, lab = ("sentence", None, "label") if task == "sst2" else ("#1 String", "#2 String", "Quality")
    ia, il = names.index(a), names.index(lab)
    ib = names.index(b) if b else None
    rows = []
    for l in lines[1:]:
        f = l.split("\t")
        rows.append((f[ia], f[ib] if ib is not None else None, int(f[il].strip())))
    return rows


def encode(tok, rows, seq):
    import numpy as np
    enc = tok.encode_batch([(a, b) if b is not None else a for a, b, _ in rows])
    ids = np.array([e.ids for e in enc], dtype=np.int32)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int8)
    types = np.array([e.type_ids for e in enc], dtype=np.int8)
    labels = np.array([r[2] for r in rows], dtype=np.int8)
    assert ids.shape[1] == seq, ids.shape
    return ids, mask, types, labels


def pruned_tokenizer(full_json, keep):
    """full_json with its vocabulary cut to the old ids in `keep` (sorted), renumbered 0.."""
    old_to_new = {old: new for new, old in enumerate(keep)}
    by_id = {i: t for t, i in full_json["model"]["vocab"].items()}
    pruned = json.loads(json.dumps(full_json))
    pruned["model"]["vocab"] = {by_id[old]: new for new, old in enumerate(keep)}
    pruned["added_tokens"] = [dict(t, id=old_to_new[t["id"]]) for t in full_json["added_tokens"]]
    for st in pruned["post_processor"]["special_tokens"].values():
        st["ids"] = [old_to_new[i] for i in st["ids"]]
    return pruned, old_to_new


def prepare(args):
    import numpy as np
    from tokenizers import Tokenizer
    full_json = json.load(open(args.tokenizer, encoding="utf-8"))
    vocab = full_json["model"]["vocab"]
    ref = Tokenizer.from_file(args.tokenizer)
    files = {(t, s): read_glue(t, os.path.join(args.data_dir, f"glue-{t}", f"{s}.tsv"))
             for t in TASKS for s in ("train", "dev")}
    # One vocabulary per task (what its train and dev files use), so each model is small;
    # the masked-LM pretraining runs on their union, and each classifier takes its rows.
    keep = {}
    for task in TASKS:
        used = {vocab[t] for t in SPECIAL}
        for split in ("train", "dev"):
            rows = files[(task, split)]
            for e in ref.encode_batch([(a, b) if b is not None else a for a, b, _ in rows]):
                used.update(e.ids)
        keep[task] = sorted(used)  # original order: [PAD] stays id 0
    union = sorted(set().union(*keep.values()))
    union_ix = {old: i for i, old in enumerate(union)}
    # The runner's settings: truncation longest-first to 128, padding to 128 with [PAD].
    ref.enable_truncation(SEQ, strategy="longest_first")
    ref.enable_padding(length=SEQ, pad_id=0, pad_token="[PAD]")
    arrays = {"union_vocab_size": np.array(len(union)),
              "union_special_ids": np.array([union_ix[vocab[t]] for t in SPECIAL])}
    info = {"full_vocab_size": len(vocab), "union_vocab_size": len(union), "tokenizers": {}}
    for task in TASKS:
        pruned, old_to_new = pruned_tokenizer(full_json, keep[task])
        path = args.out_tokenizer.replace("{task}", task)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(pruned, f, ensure_ascii=False, separators=(",", ":"))
        small = Tokenizer.from_file(path)
        small.enable_truncation(SEQ, strategy="longest_first")
        small.enable_padding(length=SEQ, pad_id=0, pad_token="[PAD]")
        lut = np.full(len(vocab), -1, dtype=np.int64)
        for old, new in old_to_new.items():
            lut[old] = new
        for split in ("train", "dev"):
            rows = files[(task, split)]
            ids, mask, types, labels = encode(small, rows, SEQ)
            rids, rmask, rtypes, _ = encode(ref, rows, SEQ)
            if not (np.array_equal(lut[rids], ids) and np.array_equal(rmask, mask)
                    and np.array_equal(rtypes, types)):
                sys.exit(f"pruned tokenizer disagrees with the full one on {task}/{split}")
            for k, v in (("ids", ids), ("mask", mask), ("types", types), ("labels", labels)):
                arrays[f"{task}_{split}_{k}"] = v
        arrays[f"{task}_to_union"] = np.array([union_ix[old] for old in keep[task]])
        with open(path, "rb") as f:
            info["tokenizers"][task] = {"path": path, "vocab_size": len(keep[task]),
                                        "sha256": hashlib.sha256(f.read()).hexdigest()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out_data)), exist_ok=True)
    np.savez_compressed(args.out_data, **arrays)
    info["rows"] = {f"{t}/{s}": len(r) for (t, s), r in files.items()}
    print(json.dumps(info))


def train(args):
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import numpy as np
    import torch
    import transformers
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    # warn_only: a kernel without a deterministic variant must not lose the run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    # Training only: TF32 products on the GPU. Evaluation and export run on the CPU in
    # float32, the arithmetic tract's float graph reproduces.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    started = time.time()
    d = np.load(args.data)
    vocab_size = int(d["union_vocab_size"])

    def t(k):
        return torch.from_numpy(d[k].astype(np.int64))

    data = {f"{task}_{s}": (t(f"{task}_{s}_ids"), t(f"{task}_{s}_mask"), t(f"{task}_{s}_types"),
                            t(f"{task}_{s}_labels"))
            for task in TASKS for s in ("train", "dev")}
    to_union = {task: t(f"{task}_to_union") for task in TASKS}

    def bert_config(vocab):
        c = BertConfig(vocab_size=vocab, num_labels=2, **ARCH)
        c._attn_implementation = "eager"
        return c

    log = {"seed": SEED, "device": dev, "torch": torch.__version__,
           "transformers": transformers.__version__, "union_vocab_size": vocab_size, "arch": ARCH,
           "recipe": RECIPE, "steps": {}}

    def schedule(model, r, steps):
        opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
        sched = transformers.get_linear_schedule_with_warmup(opt, int(r["warmup"] * steps), steps)
        return opt, sched

    def step(model, opt, sched, loss):
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    # 1. Masked-LM pretraining on the train sets' text only (dev text never trains).
    g = torch.Generator().manual_seed(SEED)
    ids = torch.cat([to_union[task][data[f"{task}_train"][0]] for task in TASKS])
    mask = torch.cat([data[f"{task}_train"][1] for task in TASKS])
    types = torch.cat([data[f"{task}_train"][2] for task in TASKS])
    special_ids = [int(i) for i in d["union_special_ids"]]  # [PAD] [UNK] [CLS] [SEP] [MASK]
    special = torch.zeros(vocab_size, dtype=torch.bool)
    special[special_ids] = True
    mask_id = special_ids[SPECIAL.index("[MASK]")]
    r = RECIPE["mlm"]
    mlm = BertForMaskedLM(bert_config(vocab_size)).to(dev)
    mlm.train()
    opt, sched = schedule(mlm, r, r["steps"])
    t0 = time.time()
    order = torch.randperm(len(ids), generator=g)
    pos = 0
    for s in range(r["steps"]):
        if pos + r["batch_size"] > len(ids):
            order, pos = torch.randperm(len(ids), generator=g), 0
        idx = order[pos:pos + r["batch_size"]]
        pos += r["batch_size"]
        width = int(mask[idx].sum(1).max())
        x, m, ty = ids[idx, :width].clone(), mask[idx, :width], types[idx, :width]
        cand = (m == 1) & ~special[x]
        pick = cand & (torch.rand(x.shape, generator=g) < r["mask_prob"])
        labels = torch.where(pick, x, torch.full_like(x, -100))
        u = torch.rand(x.shape, generator=g)
        rand_tok = torch.randint(max(special_ids) + 1, vocab_size, x.shape, generator=g)
        x = torch.where(pick & (u < 0.8), torch.full_like(x, mask_id), x)
        x = torch.where(pick & (u >= 0.8) & (u < 0.9), rand_tok, x)
        out = mlm(input_ids=x.to(dev), attention_mask=m.to(dev), token_type_ids=ty.to(dev),
                  labels=labels.to(dev))
        step(mlm, opt, sched, out.loss)
        if s % 1000 == 999 or s == 99:
            print(f"mlm step {s + 1}: loss {out.loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
    log["steps"]["mlm"] = {"seconds": round(time.time() - t0, 1), "final_loss": round(out.loss.item(), 4),
                           "sequences": len(ids)}
    encoder = {k: v.detach().cpu().clone() for k, v in mlm.bert.state_dict().items()}
    del mlm, opt, sched

    # 2. Fine-tune one classifier per task from the pretrained encoder; evaluate on dev once.
    results = {}
    for task in TASKS:
        r = RECIPE[task]
        torch.manual_seed(SEED)
        g = torch.Generator().manual_seed(SEED)
        model = BertForSequenceClassification(bert_config(len(to_union[task])))
        # The task's vocabulary is a subset of the union: its embedding rows, in its order.
        sliced = dict(encoder)
        key = "embeddings.word_embeddings.weight"
        sliced[key] = encoder[key][to_union[task]].clone()
        missing, unexpected = model.bert.load_state_dict(sliced, strict=False)
        print(f"{task}: encoder loaded; not in the MLM encoder: {missing}; unused: {unexpected}", flush=True)
        model = model.to(dev)
        ids, mask, types, labels = data[f"{task}_train"]
        bs = r["batch_size"]
        steps = r["epochs"] * ((len(ids) + bs - 1) // bs)
        opt, sched = schedule(model, r, steps)
        model.train()
        t0 = time.time()
        for _ in range(r["epochs"]):
            order = torch.randperm(len(ids), generator=g)
            for s in range(0, len(ids), bs):
                idx = order[s:s + bs]
                width = int(mask[idx].sum(1).max())
                out = model(input_ids=ids[idx, :width].to(dev), attention_mask=mask[idx, :width].to(dev),
                            token_type_ids=types[idx, :width].to(dev), labels=labels[idx].to(dev))
                step(model, opt, sched, out.loss)
        train_s = time.time() - t0
        model = model.cpu().float().eval()
        vids, vmask, vtypes, vlabels = data[f"{task}_dev"]
        preds = []
        with torch.no_grad():
            for s in range(0, len(vids), 128):
                logits = model(input_ids=vids[s:s + 128], attention_mask=vmask[s:s + 128],
                               token_type_ids=vtypes[s:s + 128]).logits
                preds.extend(logits.argmax(-1).tolist())
        preds = np.array(preds)
        gold = vlabels.numpy()
        acc = float((preds == gold).mean())
        tp = int(((preds == 1) & (gold == 1)).sum())
        f1 = 2 * tp / max(1, int((preds == 1).sum()) + int((gold == 1).sum()))
        name = f"bert-tiny-substitute-{task}"
        path = os.path.join(args.out_dir, f"{name}.onnx")
        os.makedirs(args.out_dir, exist_ok=True)
        feeds = (vids[:1], vmask[:1], vtypes[:1])
        torch.onnx.export(model, feeds, path, input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["logits"], opset_version=17, dynamo=False, do_constant_folding=True,
                          dynamic_axes={k: {0: "batch"} for k in
                                        ["input_ids", "attention_mask", "token_type_ids", "logits"]})
        with open(path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        ort_agree = ort_agreement(path, vids, vmask, vtypes, preds)
        results[task] = {"id": name, "task": f"glue/{task}", "train_size": len(ids), "val_size": len(vids),
                         "pytorch_acc": acc, "pytorch_f1": f1 if task == "mrpc" else None,
                         "train_seconds": round(train_s, 1), "onnx": os.path.basename(path),
                         "onnx_sha256": sha, "onnx_bytes": os.path.getsize(path),
                         "id2label": {0: "negative", 1: "positive"} if task == "sst2"
                         else {0: "not_equivalent", 1: "equivalent"},
                         "onnxruntime_agreement": ort_agree, "pytorch_predictions": preds.tolist()}
        print(f"{name}: PyTorch dev acc {acc:.4f} (f1 {f1:.4f}) on {len(vids)}; trained {train_s:.0f} s; "
              f"onnx {os.path.getsize(path)} bytes {sha[:12]}; onnxruntime agreement {ort_agree}", flush=True)
        log["models"] = results
        log["total_seconds"] = round(time.time() - started, 1)
        with open(os.path.join(args.out_dir, "bert-tiny-substitute.json"), "w") as f:
            json.dump(log, f, indent=1)
    write_records(log, args.out_dir)


def write_records(log, out_dir):
    """Per model, the two records suf-run reads beside `<id>.onnx`: `<id>.pytorch.json` (the
    measured PyTorch accuracy of that very file, matched by sha256, so the report's Float Acc
    is PyTorch's) and `<id>.export.json` (the classifier's id2label, so the label order is
    checked against the dataset instead of assumed)."""
    for task, m in log["models"].items():
        provenance = {k: log[k] for k in ("seed", "device", "torch", "transformers") if k in log}
        record = {**{k: v for k, v in m.items()}, **provenance,
                  "script": "scripts/bert_tiny_substitute.py",
                  "label": "SUBSTITUTE (not a Table 4 checkpoint)"}
        with open(os.path.join(out_dir, f"{m['id']}.pytorch.json"), "w") as f:
            json.dump(record, f, indent=1)
        with open(os.path.join(out_dir, f"{m['id']}.export.json"), "w") as f:
            json.dump({"id": m["id"], "task": m["task"], "onnx_sha256": m["onnx_sha256"],
                       "id2label": m["id2label"], "script": "scripts/bert_tiny_substitute.py"}, f, indent=1)
        print(f"wrote {out_dir}/{m['id']}.pytorch.json and .export.json", flush=True)


def records(args):
    with open(args.log) as f:
        write_records(json.load(f), args.out_dir)


def ort_agreement(path, ids, mask, types, preds):
    """Share of dev examples where onnxruntime's argmax on the exported file equals PyTorch's."""
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        return None
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = []
    for s in range(0, len(ids), 64):
        feeds = {"input_ids": ids[s:s + 64].numpy(), "attention_mask": mask[s:s + 64].numpy(),
                 "token_type_ids": types[s:s + 64].numpy()}
        got.extend(sess.run(None, feeds)[0].argmax(-1).tolist())
    return float((np.array(got) == preds).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="prune the vocabulary and tokenize the data (no torch)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--tokenizer", required=True, help="bert-base-uncased tokenizer.json")
    p.add_argument("--out-tokenizer", required=True, help="path with {task} (sst2, mrpc) in it")
    p.add_argument("--out-data", required=True, help=".npz of tokenized train/dev sets")
    p = sub.add_parser("train", help="pretrain, fine-tune, evaluate and export (torch)")
    p.add_argument("--data", required=True, help="the .npz written by prepare")
    p.add_argument("--out-dir", required=True)
    p = sub.add_parser("records", help="per-model .pytorch.json/.export.json from a train log (no torch)")
    p.add_argument("--log", required=True, help="the bert-tiny-substitute.json written by train")
    p.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    {"prepare": prepare, "train": train, "records": records}[args.cmd](args)


if __name__ == "__main__":
    main()
