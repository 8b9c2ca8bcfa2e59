#!/usr/bin/env python3
"""Run `suf-compile --lower` models in onnxruntime on the fixtures' reference inputs and
record the outputs, so that a Rust test (tests/compile_fixtures.rs) can compare them with
tract running the custom-op SUF model (issue 2, acceptance 3).

Usage (repository root): python3 scripts/check_lowered_ort.py [path/to/suf-compile]
Writes results/lowered_ort.json.
"""
import json
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

FIXTURES = ["bert_tiny_op17", "gpt2_tiny_op14"]


def main():
    compiler = sys.argv[1] if len(sys.argv) > 1 else "target/release/suf-compile"
    out = {"onnxruntime": ort.__version__, "n_bits": 37, "frac_bits": 12, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in FIXTURES:
            lowered = f"{tmp}/{name}.lowered.onnx"
            subprocess.run([compiler, f"tests/fixtures/{name}.onnx", "--n-bits", "37", "--lower", "-o", lowered],
                           check=True, stdout=subprocess.DEVNULL)
            ref = json.load(open(f"tests/fixtures/{name}.ref.json"))
            feeds = {k: np.array(v, dtype=np.int64) for k, v in ref["inputs"].items()}
            sess = ort.InferenceSession(lowered, providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            logits = sess.run(None, {k: feeds[k] for k in names})[0]
            if logits.ndim == 3:  # decoders: the last real position of each row, first 32 logits
                logits = np.stack([logits[b, n - 1, :32] for b, n in enumerate(ref["lengths"])])
            out["models"][name] = logits.astype(np.float32).tolist()
            grid = np.all(np.asarray(logits, dtype=np.float64) * 4096 == np.round(np.asarray(logits, dtype=np.float64) * 4096))
            print(f"{name}: onnxruntime ran the lowered model; outputs on the 2^-12 grid: {bool(grid)}")
    with open("results/lowered_ort.json", "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
