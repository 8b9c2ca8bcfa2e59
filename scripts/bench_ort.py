#!/usr/bin/env python3
"""onnxruntime side of scripts/bench.sh: the same ONNX file, the same token tensors as
suf-bench (id[b, s] = (7919 * (b * seq + s) + 13) mod vocab, full attention mask), the same
thread count; median latency per batch size, written as JSON."""
import argparse, json, platform, statistics, time

import numpy as np
import onnx
import onnxruntime as ort


def vocab_of(path):
    m = onnx.load(path, load_external_data=False)
    for n in m.graph.node:
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == "input_ids":
            for t in m.graph.initializer:
                if t.name == n.input[0]:
                    return int(t.dims[0])
    return 1000


def feeds(sess, batch, seq, vocab):
    i = np.arange(batch * seq, dtype=np.int64)
    ids = ((7919 * i + 13) % vocab).reshape(batch, seq)
    out = {}
    for inp in sess.get_inputs():
        dt = np.int32 if "int32" in inp.type else np.int64
        if inp.name == "input_ids":
            out[inp.name] = ids.astype(dt)
        elif inp.name == "attention_mask":
            out[inp.name] = np.ones((batch, seq), dtype=dt)
        elif inp.name == "position_ids":
            out[inp.name] = np.tile(np.arange(seq, dtype=dt), (batch, 1))
        else:
            out[inp.name] = np.zeros((batch, seq), dtype=dt)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--out-json", required=True)
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    prepare = time.perf_counter() - t0
    vocab = vocab_of(a.model)
    timings = []
    for b in [int(x) for x in a.batch.split(",")]:
        f = feeds(sess, b, a.seq_len, vocab)
        for _ in range(a.warmup):
            sess.run(None, f)
        runs = []
        for _ in range(a.iters):
            t = time.perf_counter()
            sess.run(None, f)
            runs.append((time.perf_counter() - t) * 1e3)
        med = statistics.median(runs)
        print(f"onnxruntime batch {b}: median {med:.1f} ms", flush=True)
        timings.append({"graph": "onnxruntime", "batch": b, "seq_len": a.seq_len,
                        "prepare_s": prepare, "median_ms": med, "min_ms": min(runs),
                        "runs_ms": runs, "examples_per_s": b / (med / 1e3)})
    json.dump({"tool": f"onnxruntime {ort.__version__}", "threads": a.threads,
               "python": platform.python_version(), "onnxruntime": ort.__version__,
               "onnx": onnx.__version__, "numpy": np.__version__,
               "machine": f"{platform.machine()} {platform.processor()}".strip(),
               "model": a.model, "timings": timings}, open(a.out_json, "w"), indent=1)


if __name__ == "__main__":
    main()
