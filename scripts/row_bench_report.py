#!/usr/bin/env python3
"""Table of scripts/row_bench.sh: per architecture, onnxruntime's float row against suf-run's
whole rows (float + output; float + ring + sigma), as ratios of wall time over the same
examples, with suf-run's phase breakdown and peak RSS. Refuses reports that do not fit
together (other examples, another machine's thread count, a dirty or unknown build)."""
import argparse
import json
import os
import platform
import sys

from report_io import fail, load, write


def parse(argv):
    """--arch A [--suf NAME JSON WALL ORT_JSON]... --end, repeated."""
    groups, cur, rest, i = [], None, [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--arch":
            cur = {"arch": argv[i + 1], "suf": []}
            i += 2
        elif a == "--suf" and cur is not None:
            cur["suf"].append(tuple(argv[i + 1:i + 5]))
            i += 5
        elif a == "--end" and cur is not None:
            groups.append(cur)
            cur = None
            i += 1
        else:
            rest.append(a)
            i += 1
    ap = argparse.ArgumentParser()
    ap.add_argument("--command", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--out-json", required=True)
    ap.add_argument("--out-md", required=True)
    return groups, ap.parse_args(rest)


def model_mib(path):
    """The float model's own size: the .onnx and its external data."""
    size = os.path.getsize(path)
    if os.path.exists(path + ".data"):
        size += os.path.getsize(path + ".data")
    return size / 2**20


def main():
    groups, a = parse(sys.argv[1:])
    if not groups:
        fail("no --arch ... --end group")
    rows, commits, machines = [], set(), set()
    for g in groups:
        for name, path, wall_path, ort_path in g["suf"]:
            ort = load(ort_path)
            if ort["threads"] != a.threads:
                fail(f"{ort_path}: {ort['threads']} threads, not {a.threads}")
            with open(wall_path) as f:
                wall_s, rc, peak_kib = f.read().split()
            wall, rc, peak = float(wall_s), int(rc), int(peak_kib) / 1024
            ex = ort["examples"]
            size = model_mib(ort["model"])
            if rc != 0:
                rows.append({"arch": g["arch"], "run": name, "examples": ex, "ort_s": ort["total_s"],
                             "ort_acc": ort["acc"], "suf_wall_s": wall, "model_mib": size, "failed": {"exit": rc, "peak_rss_mib": peak,
                             "log": os.path.splitext(path)[0] + ".log"}})
                continue
            rep = load(path)
            meta, row = rep["meta"], rep["rows"][0]
            commit = meta.get("git_commit", "unknown")
            if commit == "unknown" or commit.endswith("-dirty"):
                fail(f"{path}: built from {commit!r}, not a clean commit")
            commits.add(commit)
            machines.add(meta["machine"])
            if row["examples"] != ex:
                fail(f"{ort_path}: {ex} examples, {path}: {row['examples']}")
            ph = row["phases"]
            rows.append({
                "arch": g["arch"], "run": name, "levels": sorted(row["suf"]), "examples": ex,
                "ort_s": ort["total_s"], "ort_phases_s": ort["phases_s"], "ort_engine": ort["engine"],
                "ort_acc": ort["acc"], "suf_wall_s": wall, "ratio": wall / ort["total_s"],
                "phases_s": {k: ph[k] for k in ("prepare_s", "load_s", "compile_s", "optimise_s", "evaluate_s", "total_s")},
                "peak_rss_mib": row.get("peak_rss_mib", meta.get("peak_rss_mib")), "time_peak_rss_mib": peak, "model_mib": size,
                "float_acc": row["float"]["acc"], "suf_acc": {k: v["acc"] for k, v in row["suf"].items()},
                "git_commit": commit,
            })
    if len(machines) > 1:
        fail(f"reports from several machines: {sorted(machines)}")
    machine = machines.pop() if machines else (
        f"{platform.system().lower()} {platform.machine()}, {os.cpu_count()} cores (no suf-run report finished)")
    report = {"command": a.command, "threads": a.threads, "machine": machine,
              "git_commits": sorted(commits), "rows": rows}
    write(a.out_json, json.dumps(report, indent=1) + "\n")
    lines = [
        "# Whole rows: suf-run (float + SUF) vs onnxruntime (float alone)", "",
        f"Machine: {report['machine']}; every engine on the same {a.threads} cores, the same data files and "
        f"examples. suf-run commit {', '.join(report['git_commits'])}.", "",
        f"Command: `{a.command}`", "",
        "onnxruntime: the exported float graph, full logits, every example padded to 128, batch 8 "
        "(scripts/row_ort.py: load + tokenize + run + score). suf-run: the whole run, float graph "
        "and SUF levels (load, compile, optimise, evaluate; wall time). ratio = suf-run / onnxruntime "
        "on the same examples; below 1.0 suf-run finishes float + SUF sooner than onnxruntime "
        "finishes float alone.", "",
        "| model | suf-run graphs | examples | onnxruntime s | suf-run s | ratio | load | compile | optimise | evaluate | peak RSS MiB (x model) | float acc (ORT / tract) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "failed" in r:
            f = r["failed"]
            graphs = {"output": "float + output", "exact": "float + ring + sigma"}.get(r["run"], r["run"])
            lines.append(f"| {r['arch']} (random weights) | {graphs} | {r['examples']} | {r['ort_s']:.1f} | "
                         f"FAILED after {r['suf_wall_s']:.1f} s (exit {f['exit']}; `{f['log']}`) | - | | | | | "
                         f"{f['peak_rss_mib']:.0f} ({f['peak_rss_mib'] / r['model_mib']:.1f}x) | {100 * r['ort_acc']:.2f} / - |")
            continue
        p = r["phases_s"]
        lines.append(
            f"| {r['arch']} (random weights) | float + {' + '.join(r['levels'])} | {r['examples']} | {r['ort_s']:.1f} | "
            f"{r['suf_wall_s']:.1f} | **{r['ratio']:.2f}** | {p['load_s']:.1f} | {p['compile_s']:.1f} | "
            f"{p['optimise_s']:.1f} | {p['evaluate_s']:.1f} | {r['peak_rss_mib']:.0f} ({r['peak_rss_mib'] / r['model_mib']:.1f}x) | "
            f"{100 * r['ort_acc']:.2f} / {100 * r['float_acc']:.2f} |")
    lines += ["", "Phases in seconds (suf-run's own report). Peak RSS: suf-run's (VmHWM), for a failed run "
              "GNU time's; x model = over the float model's file size (.onnx + external data).",
              "", "Accuracies are of random weights (near 0 / 50%): shown only to check that both "
              "engines scored the same examples the same way."]
    write(a.out_md, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
