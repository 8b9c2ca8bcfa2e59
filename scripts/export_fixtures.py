#!/usr/bin/env python3
"""Export the small real-exporter test fixtures of suf (tests/fixtures/).

Random-weight (seeded) tiny versions of the Table 4 architectures, exported with the
legacy TorchScript exporter (`dynamo=False`) in eval mode at a fixed sequence length of 128
(SPEC.md section 7: the legacy exporter's graphs run in tract; the dynamo exporter's do not
all). The vocabularies are the real ones, so the real tokenizers in ../shared work.

For each model it writes:
  <name>.onnx            the exported graph (< 5 MB)
  <name>.structure.json  architecture numbers and module counts read off the PyTorch model
  <name>.ref.json        two fixed inputs (one padded) and PyTorch's float outputs

Usage: python3 scripts/export_fixtures.py --out tests/fixtures
"""
import argparse
import collections
import hashlib
import json
import os

import numpy as np
import torch
import transformers
from export_onnx import ByName  # noqa: E402  (scripts/ is on sys.path when run as a script)
from transformers import (BertConfig, BertForSequenceClassification, GPT2Config,
                          GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM, LlamaConfig,
                          LlamaForCausalLM)

SEQ = 128
SEED = 20261123


def models():
    yield "bert_tiny", BertForSequenceClassification, BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, num_labels=2), "bert"
    yield "gpt2_tiny", GPT2LMHeadModel, GPT2Config(
        vocab_size=50257, n_embd=8, n_layer=2, n_head=2, n_positions=SEQ), "gpt"
    yield "gptneo_tiny", GPTNeoForCausalLM, GPTNeoConfig(
        vocab_size=50257, hidden_size=8, num_layers=2, num_heads=2, max_position_embeddings=SEQ,
        attention_types=[[["global", "local"], 1]], window_size=32), "gpt"
    yield "llama_tiny", LlamaForCausalLM, LlamaConfig(
        vocab_size=49152, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=SEQ,
        tie_word_embeddings=True), "gpt"


def structure(model, config, family):
    counts = collections.Counter(type(m).__name__ for m in model.modules())
    return {
        "family": family,
        "architecture": type(model).__name__,
        "config": config.to_diff_dict(),
        "module_counts": dict(sorted(counts.items())),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seed": SEED,
    }


def inputs(family, vocab):
    g = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(1000, vocab, (2, SEQ), generator=g)
    mask = torch.ones(2, SEQ, dtype=torch.int64)
    mask[1, 50:] = 0
    ids[1, 50:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if family == "bert":
        feeds["token_type_ids"] = torch.zeros(2, SEQ, dtype=torch.int64)
    return feeds


def export(name, cls, config, family, opset, out):
    torch.manual_seed(SEED)
    config._attn_implementation = "eager"
    model = cls(config).eval()
    feeds = inputs(family, config.vocab_size)
    names = list(feeds)
    path = os.path.join(out, f"{name}_op{opset}.onnx")
    # Reference outputs first: tracing GPT-2 for export leaves the module in a state whose
    # later eager outputs differ from both a fresh model and the exported graph.
    with torch.no_grad():
        logits = model(**feeds).logits.float().numpy()
    kwargs_model = ByName(model, names) if family == "gpt" else model
    torch.onnx.export(kwargs_model, tuple(feeds[k] for k in names), path, input_names=names,
                      output_names=["logits"], opset_version=opset, dynamo=False,
                      do_constant_folding=True,
                      dynamic_axes={k: {0: "batch"} for k in names} | {"logits": {0: "batch"}})
    ref = {"inputs": {k: v.tolist() for k, v in feeds.items()}}
    if family == "bert":
        ref["logits"] = logits.tolist()
    else:
        lengths = feeds["attention_mask"].sum(1).tolist()
        ref["lengths"] = lengths
        ref["argmax"] = [logits[b, :lengths[b]].argmax(-1).tolist() for b in range(2)]
        ref["last_logits_head"] = [logits[b, lengths[b] - 1, :32].tolist() for b in range(2)]
    ref["torch_check"] = "PyTorch eager, float32, eval mode, no KV cache"
    with open(path[:-5] + ".ref.json", "w") as f:
        json.dump(ref, f)
    with open(path[:-5] + ".structure.json", "w") as f:
        json.dump(structure(model, config, family), f, indent=1, default=str)
    return path, feeds, logits


def op_histogram(path):
    import onnx
    m = onnx.load(path)
    return dict(sorted(collections.Counter(n.op_type for n in m.graph.node).items()))


def ort_check(path, feeds, logits):
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    return float(np.abs(got - logits).max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    report = {}
    for name, cls, config, family in models():
        opsets = [14, 17] if name in ("bert_tiny", "gpt2_tiny") else [17]
        for opset in opsets:
            path, feeds, logits = export(name, cls, config, family, opset, args.out)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            report[os.path.basename(path)] = {
                "bytes": os.path.getsize(path), "sha256": digest,
                "ops": op_histogram(path), "ort_vs_torch_max_abs": ort_check(path, feeds, logits)}
            print(os.path.basename(path), report[os.path.basename(path)], flush=True)
    with open(os.path.join(args.out, "export_report.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
