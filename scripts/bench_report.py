#!/usr/bin/env python3
"""Merges suf-bench and bench_ort.py JSON files into results/bench/bench.{json,md}: examples/s
per engine and graph, and the ratios SUF/float (tract) and tract float/onnxruntime."""
import argparse, json, sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", nargs=3, action="append", metavar=("NAME", "SUF_JSON", "ORT_JSON"), required=True)
    ap.add_argument("--command", required=True, help="the command that produced the numbers")
    ap.add_argument("--out-json", required=True)
    ap.add_argument("--out-md", required=True)
    a = ap.parse_args()
    rows = []
    # Provenance comes from what each tool recorded about itself, never from a typed-in line:
    # the machine and commit from suf-bench's JSON, package versions from bench_ort.py's.
    machines, commits, versions = set(), set(), set()
    for name, suf_path, ort_path in a.pair:
        suf = json.load(open(suf_path))
        ort = json.load(open(ort_path))
        machines.add(suf["machine"])
        commits.add(suf["git_commit"])
        versions.add(json.dumps({k: ort[k] for k in ("python", "onnxruntime", "onnx", "numpy") if k in ort}, sort_keys=True))
        for b in sorted({t["batch"] for t in suf["timings"]}):
            by = {t["graph"]: t for t in suf["timings"] if t["batch"] == b}
            o = next((t for t in ort["timings"] if t["batch"] == b), None)
            fl = by["float"]["median_ms"]
            row = {"model": name, "batch": b, "seq_len": by["float"]["seq_len"],
                   "n_bits": suf["n_bits"], "threads": suf["threads"],
                   "onnxruntime_ms": o and o["median_ms"], "tract_float_ms": fl,
                   "tract_over_onnxruntime": o and fl / o["median_ms"]}
            for g, t in by.items():
                if g != "float":
                    row[f"suf_{g}_ms"] = t["median_ms"]
                    row[f"suf_{g}_over_float"] = t.get("over_float") or t["median_ms"] / fl
            rows.append(row)
    if len(machines) != 1 or len(commits) != 1:
        sys.exit(f"bench_report: the pairs come from different machines {sorted(machines)} or builds {sorted(commits)}")
    machine, commit = machines.pop(), commits.pop()
    py = ", ".join(f"{k} {v}" for k, v in json.loads(sorted(versions)[0]).items())
    out = {"machine": machine, "git_commit": commit, "python_side": py, "command": a.command, "rows": rows}
    with open(a.out_json, "w") as f:
        json.dump(out, f, indent=1)
    levels = [k[4:-3] for k in rows[0] if k.startswith("suf_") and k.endswith("_ms")]
    md = ["# suf benchmark: tract float vs tract SUF vs onnxruntime", "",
          f"Machine: {machine} (as suf-bench recorded it). suf-bench commit `{commit}`; "
          f"onnxruntime side: {py}. One thread for every engine (tract single-threaded plan, onnxruntime "
          "intra_op=1, sequential). Same ONNX file, same token tensors. tract graphs run in "
          "interleaved rounds (float, output, ring, sigma, float, ...); X/float is the median of the "
          "per-round ratios, so machine drift cancels. onnxruntime runs right after, in its own process.", "",
          f"Command: `{a.command}`", "",
          "| model | batch x seq | onnxruntime ms | tract float ms | tract/ORT | " +
          " | ".join(f"SUF {l} ms | {l}/float" for l in levels) + " |",
          "|---|---|---|---|---|" + "---|---|" * len(levels)]
    for r in rows:
        ort_ms = f"{r['onnxruntime_ms']:.1f}" if r["onnxruntime_ms"] else "-"
        ratio = f"{r['tract_over_onnxruntime']:.2f}" if r["tract_over_onnxruntime"] else "-"
        cells = " | ".join(f"{r[f'suf_{l}_ms']:.1f} | {r[f'suf_{l}_over_float']:.2f}" for l in levels)
        md.append(f"| {r['model']} | {r['batch']} x {r['seq_len']} | {ort_ms} | {r['tract_float_ms']:.1f} | {ratio} | {cells} |")
    with open(a.out_md, "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
