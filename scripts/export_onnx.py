#!/usr/bin/env python3
"""Export a Hugging Face checkpoint to ONNX for suf: any sequence classifier (BERT family) or
causal LM (GPT family) by hub id or local directory (--hf), the Table 4 checkpoints
(SPEC.md section 6), or random-weight models of the exact Table 4 architectures (labelled
random) for graph and speed checks.

Needs torch + transformers (scripts/requirements.txt); --help needs neither. Hub ids need
internet; a local directory (config.json, weights, tokenizer files) and --random-arch do not.
Exporter settings are the ones suf is tested with (SPEC.md section 7): the legacy TorchScript
exporter (dynamo=False), eval mode, eager attention, fixed seq 128, dynamic batch,
inputs input_ids / attention_mask (+ token_type_ids for BERT), output "logits".

  python3 scripts/export_onnx.py --hf textattack/bert-base-uncased-SST-2 --family bert --out models/my-sst2.onnx
  python3 scripts/export_onnx.py --hf ./my-finetuned-checkpoint --family gpt --out models/my-lm.onnx
  python3 scripts/export_onnx.py --all                       # every Table 4 row -> models/<id>.onnx
  python3 scripts/export_onnx.py --row bert-base-sst2
  python3 scripts/export_onnx.py --random-arch gpt2 --out models/random-gpt2.onnx

--hf writes <out>.onnx, <out stem>.tokenizer.json (the checkpoint's tokenizer, for suf-run
--tokenizer) and <out stem>.export.json (source, revision, id2label, sha256), then prints the
suf-run command that evaluates it.

REVISION PINNING: the revisions below are "main" because no machine this project runs on
can reach the hub to read commit hashes. Record the hash you exported (printed, and written
to <id>.export.json) and replace "main" with it to pin.
"""
import argparse
import hashlib
import json
import os

# torch and transformers are imported where they are used, so that --help works without them.

SEQ = 128
# row id -> (hub id, revision, family)
CHECKPOINTS = {
    "bert-tiny-sst2": ("takedarn/bert-tiny-sst2", "main", "bert"),
    "bert-tiny-mrpc": ("M-FAC/bert-tiny-finetuned-mrpc", "main", "bert"),
    "bert-tiny-qnli": ("M-FAC/bert-tiny-finetuned-qnli", "main", "bert"),
    "bert-base-sst2": ("textattack/bert-base-uncased-SST-2", "main", "bert"),
    "bert-base-mrpc": ("textattack/bert-base-uncased-MRPC", "main", "bert"),
    "bert-base-qnli": ("textattack/bert-base-uncased-QNLI", "main", "bert"),
    "bert-large-sst2": ("yoshitomo-matsubara/bert-large-uncased-sst2", "main", "bert"),
    "bert-large-mrpc": ("yoshitomo-matsubara/bert-large-uncased-mrpc", "main", "bert"),
    "bert-large-qnli": ("yoshitomo-matsubara/bert-large-uncased-qnli", "main", "bert"),
    "gpt2-lambada": ("gpt2", "main", "gpt"),
    "gpt-neo-1.3b-lambada": ("EleutherAI/gpt-neo-1.3B", "main", "gpt"),
}
# --random-arch name -> (config source, family, config overrides)
RANDOM_ARCHS = {
    "bert-tiny": ("bert", dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)),
    "bert-base": ("bert", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)),
    "bert-large": ("bert", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)),
    "gpt2": ("gpt2", dict(n_embd=768, n_layer=12, n_head=12)),
    "gpt-neo-1.3b": ("gpt_neo", dict(hidden_size=2048, num_layers=24, num_heads=16,
                                     attention_types=[[["global", "local"], 12]], window_size=256)),
}


def ByName(model, names):
    """Keyword call: the positional order of forward() differs between model classes."""
    import torch

    class _ByName(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.names = model, names

        def forward(self, *args):
            return self.model(**dict(zip(self.names, args)), use_cache=False).logits

    return _ByName()


def export(model, family, path):
    import torch
    model = model.eval()
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if family == "bert" else [])
    feeds = tuple(torch.ones(1, SEQ, dtype=torch.long) for _ in names)
    kwargs = {"use_cache": False} if family == "gpt" else {}
    wrapped = ByName(model, names) if kwargs else model
    large = sum(p.numel() for p in model.parameters()) * 4 > 1.8e9
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.onnx.export(wrapped, feeds, path, input_names=names, output_names=["logits"],
                      opset_version=17, dynamo=False, do_constant_folding=True,
                      dynamic_axes={k: {0: "batch"} for k in names + ["logits"]})
    if large:  # > 2 GB: ONNX needs external data (suf reads and writes it)
        import onnx
        m = onnx.load(path)
        onnx.save(m, path, save_as_external_data=True, location=os.path.basename(path) + ".data")
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def label_map(model):
    """The checkpoint's id2label as suf-run's per-row "label_map" ({"0": name, ...}): the
    runner reads it from <stem>.export.json and refuses a label order that contradicts the
    dataset's (runner/src/labels.rs)."""
    return {str(k): v for k, v in sorted(model.config.id2label.items())}


def export_hf(source, family, path, revision=None, row=None):
    """Any checkpoint, by hub id or local directory: the model, its tokenizer and a record."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    cls = AutoModelForSequenceClassification if family == "bert" else AutoModelForCausalLM
    kw = {"revision": revision} if revision else {}
    model = cls.from_pretrained(source, attn_implementation="eager", torch_dtype=torch.float32, **kw)
    tok = AutoTokenizer.from_pretrained(source, **kw)
    sha = export(model, family, path)
    stem = path[:-5] if path.endswith(".onnx") else path
    tok_path = stem + ".tokenizer.json"
    tok.backend_tokenizer.save(tok_path)
    info = {"source": source, "family": family, "revision": revision,
            "resolved_commit": getattr(model.config, "_commit_hash", None),
            "id2label": {int(k): v for k, v in model.config.id2label.items()} if family == "bert" else None,
            "label_map": label_map(model) if family == "bert" else None,
            "tokenizer": tok_path, "onnx": path, "onnx_sha256": sha}
    if row:
        info = {"row": row, "hub_id": source, **info}
    with open(stem + ".export.json", "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))
    return info


def export_checkpoint(row, out_dir):
    hub, rev, family = CHECKPOINTS[row]
    export_hf(hub, family, os.path.join(out_dir, f"{row}.onnx"), revision=rev, row=row)


def export_random(arch, path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    base, overrides = RANDOM_ARCHS[arch]
    torch.manual_seed(0)
    config = AutoConfig.for_model(base, **overrides)
    config._attn_implementation = "eager"
    if base == "bert":
        config.num_labels = 2
        model, family = AutoModelForSequenceClassification.from_config(config), "bert"
    else:
        model, family = AutoModelForCausalLM.from_config(config), "gpt"
    sha = export(model, family, path)
    print(json.dumps({"random_arch": arch, "label": "RANDOM WEIGHTS", "onnx": path, "onnx_sha256": sha}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", metavar="ID_OR_DIR",
                    help="any checkpoint: a Hugging Face hub id or a local directory")
    ap.add_argument("--family", choices=["bert", "gpt"],
                    help="with --hf: bert = sequence classifier (GLUE), gpt = causal LM (LAMBADA)")
    ap.add_argument("--revision", help="with --hf: hub revision (commit hash) to pin")
    ap.add_argument("--row", choices=sorted(CHECKPOINTS), action="append", default=[],
                    help="a Table 4 row of configs/accuracy_table4.json")
    ap.add_argument("--all", action="store_true", help="every Table 4 row")
    ap.add_argument("--random-arch", choices=sorted(RANDOM_ARCHS))
    ap.add_argument("--out-dir", default="models")
    ap.add_argument("--out", help="output .onnx for --hf and --random-arch")
    args = ap.parse_args()
    if args.hf:
        if not args.family:
            ap.error("--hf needs --family bert|gpt")
        out = args.out or os.path.join(args.out_dir, os.path.basename(args.hf.rstrip("/")) + ".onnx")
        info = export_hf(args.hf, args.family, out, revision=args.revision)
        task, data = (("glue/sst2", "../shared/data/glue-sst2/dev.tsv") if args.family == "bert"
                      else ("lambada_openai", "../shared/data/lambada_openai/lambada_test.jsonl"))
        print(f"evaluate it (pick the --task and --data of your checkpoint):\n"
              f"  cargo run --release --bin suf-run -- --model {out} --tokenizer {info['tokenizer']} "
              f"--task {task} --data {data} --n-bits 37")
    if args.random_arch:
        export_random(args.random_arch, args.out or os.path.join(args.out_dir, f"random-{args.random_arch}.onnx"))
    for row in (sorted(CHECKPOINTS) if args.all else args.row):
        export_checkpoint(row, args.out_dir)


if __name__ == "__main__":
    main()
