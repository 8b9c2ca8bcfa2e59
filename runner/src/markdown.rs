//! The report as Markdown: SIGMA's Table 4 layout with what this run measured in it, a
//! details table with every level, deltas and agreement, and the bitwidth-search table.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::report::{self, task_of, FloatSection, Report, RowReport};

/// Writes the Markdown report and, beside it, each searched row's plots.
pub fn write(report: &Report, md: &Path) -> Result<()> {
    let plots = crate::plot::write_row_plots(report, md)?;
    report::write_atomic(md, to_markdown(report, &plots).as_bytes())
}

fn fmt_pct(x: f64) -> String {
    format!("{:.2}", x * 100.0)
}

fn fmt_size(n: Option<u64>) -> String {
    match n {
        None => "-".into(),
        Some(n) if n >= 10_000 => format!("{}k", (n as f64 / 1000.0).round()),
        Some(n) if n >= 1_000 => format!("{:.1}k", n as f64 / 1000.0),
        Some(n) => n.to_string(),
    }
}

fn float_extra(f: &FloatSection) -> String {
    match (f.f1, f.word_acc) {
        (Some(a), _) => format!("F1 float {}", fmt_pct(a)),
        (_, Some(a)) => format!("whole-word float {}", fmt_pct(a)),
        _ => String::new(),
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The measured float accuracy: PyTorch's when the row carries a PyTorch run of this very
/// ONNX file over the same examples, else tract's on the original graph; labelled either way.
pub fn measured_float(r: &RowReport) -> Option<String> {
    let f = r.float.as_ref()?;
    let torch = r.pytorch.as_ref().filter(|p| {
        p.get("onnx_sha256").and_then(|s| s.as_str()) == r.model_sha256.as_deref()
            && p.get("examples").and_then(|n| n.as_u64()) == Some(r.examples)
    });
    Some(
        match torch.and_then(|p| p.get("acc")).and_then(|a| a.as_f64()) {
            Some(acc) => format!("{} (PyTorch)", fmt_pct(acc)),
            None => format!("{} (tract float)", fmt_pct(f.acc)),
        },
    )
}

/// Examples run, with the dataset's full size in parentheses when fewer were run.
fn val_size(r: &RowReport) -> String {
    match r.val_size {
        None => format!("- ({})", r.sigma_ref.val_size),
        Some(full) if r.examples < full => format!("{} ({full})", r.examples),
        Some(full) => full.to_string(),
    }
}

fn level_acc(r: &RowReport, level: &str) -> String {
    if r.skipped {
        return "skipped".into();
    }
    r.suf
        .get(level)
        .map(|s| fmt_pct(s.acc))
        .unwrap_or_else(|| "not run".into())
}

/// Each searched level's smallest ring: `output 21, sigma none (40*)`.
fn min_n(r: &RowReport) -> String {
    if r.min_bits.is_empty() {
        return "-".into();
    }
    crate::suf::LEVELS
        .iter()
        .filter_map(|l| {
            let m = r.min_bits.get(l.as_str())?;
            Some(match (m.min_bits, m.min_bits_no_wrap) {
                (Some(n), _) => format!("{l} {n}"),
                (None, Some(n)) => format!("{l} none ({n}*)"),
                (None, None) => format!("{l} none"),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The provenance line, with a warning that cannot be missed when the numbers do not come
/// from a clean commit.
fn provenance(report: &Report) -> String {
    let m = &report.meta;
    let mut out = format!(
        "tool {} · commit `{}` · binary sha256 `{}` · config sha256 `{}` · {} · started {} · finished {}{}\n\n",
        m.tool_version,
        m.git_commit,
        if m.binary_sha256.is_empty() { "(not recorded)" } else { &m.binary_sha256[..m.binary_sha256.len().min(12)] },
        &m.config_sha256[..m.config_sha256.len().min(12)],
        m.machine,
        m.started,
        m.finished.as_deref().unwrap_or("(running)"),
        m.shard
            .as_ref()
            .map(|s| format!(" · shard {s}"))
            .unwrap_or_default()
    );
    if m.git_commit.ends_with("-dirty") {
        out.push_str("**DIRTY BUILD: the binary was built from sources with uncommitted changes; the commit above does not reproduce these numbers.**\n\n");
    } else if m.git_commit == "unknown" {
        out.push_str("**NO GIT COMMIT: the binary was not built in a git checkout; only the binary sha256 identifies the code.**\n\n");
    }
    out
}

/// Table 4 layout (SPEC section 3) plus a details table with every level, deltas and
/// agreement, and the levels table. `plots` names each row's accuracy-against-n plots.
pub fn to_markdown(report: &Report, plots: &BTreeMap<String, Vec<String>>) -> String {
    let mut out = String::new();
    out.push_str("# suf-run: SIGMA Table 4 comparison\n\n");
    out.push_str(&provenance(report));
    out.push_str(
        "Float Acc is measured: PyTorch where the row has a PyTorch run of the same ONNX file \
         on the same examples, else tract on the original graph (labelled). SIGMA PyTorch and \
         SIGMA are SIGMA's reported numbers. SUF output / SUF sigma: this run's rewritten graph \
         at emulation level `output` and `sigma` (\"not run\" when the level was not asked \
         for). min n: the smallest ring within the tolerance of float, per searched level \
         (`--find-min-bits`). Val Size: examples run (the full size in parentheses when fewer \
         were run).\n\n",
    );
    out.push_str("| Model | Dataset | Train Size | Val Size | Float Acc | SIGMA PyTorch Acc | SIGMA Acc | SUF output | SUF sigma | min n | Bitwidth | frac_bits | Notes |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &report.rows {
        let dataset = task_of(&r.task)
            .map(|t| t.display_name().to_string())
            .unwrap_or_else(|_| r.task.clone());
        let mut notes = Vec::new();
        if let Some(reason) = &r.skip_reason {
            notes.push(format!("skipped: {reason}"));
        }
        for (level, s) in &r.suf {
            notes.push(format!("agreement [{level}] {}", fmt_pct(s.agreement)));
        }
        if let Some(s) = r.suf.get("ring") {
            notes.push(format!("SUF ring {}", fmt_pct(s.acc)));
        }
        notes.extend(r.run_notes.iter().cloned());
        if let Some(files) = plots.get(&r.id) {
            notes.push(format!("plot: {}", files.join(", ")));
        }
        if let Some(n) = &r.notes {
            notes.push(n.clone());
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            md_escape(r.name.as_deref().unwrap_or(&r.id)),
            dataset,
            fmt_size(r.train_size),
            val_size(r),
            measured_float(r).unwrap_or_else(|| if r.skipped {
                "skipped".into()
            } else {
                "-".into()
            }),
            fmt_pct(r.sigma_ref.pytorch_acc),
            fmt_pct(r.sigma_ref.sigma_acc),
            level_acc(r, "output"),
            level_acc(r, "sigma"),
            min_n(r),
            r.n_bits,
            r.frac_bits,
            md_escape(&notes.join("; "))
        ));
    }
    out.push_str("\n## Details\n\n");
    out.push_str("| Row | Examples | Float Acc | Level | SUF Acc | SUF-Float (pp) | SUF-Sigma (pp) | Float-Sigma PyTorch (pp) | Agreement | mean abs logit diff | max abs logit diff | Extra | Float s | SUF s |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in report.rows.iter().filter(|r| !r.skipped) {
        let Some(f) = &r.float else { continue };
        if r.suf.is_empty() {
            out.push_str(&format!(
                "| {} | {} | {} | - | - | - | - | {:+.2} | - | - | - | {} | {:.1} | - |\n",
                r.id,
                r.examples,
                fmt_pct(f.acc),
                r.float_sigma_pp.unwrap_or(0.0),
                float_extra(f),
                f.runtime_s
            ));
        }
        for (level, s) in &r.suf {
            let d = &r.delta_pp[level];
            let extra = match (f.f1, s.f1, f.word_acc, s.word_acc) {
                (Some(a), Some(b), _, _) => format!("F1 float {} / SUF {}", fmt_pct(a), fmt_pct(b)),
                (_, _, Some(a), Some(b)) => {
                    format!("whole-word float {} / SUF {}", fmt_pct(a), fmt_pct(b))
                }
                _ => String::new(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:+.2} | {:+.2} | {:+.2} | {} | {:.3e} | {:.3e} | {} | {:.1} | {:.1} |\n",
                r.id,
                r.examples,
                fmt_pct(f.acc),
                level,
                fmt_pct(s.acc),
                d.suf_float,
                d.suf_sigma,
                r.float_sigma_pp.unwrap_or(0.0),
                fmt_pct(s.agreement),
                s.logit_abs_diff.mean,
                s.logit_abs_diff.max,
                extra,
                f.runtime_s,
                s.runtime_s
            ));
        }
    }
    out.push_str(&levels_table(report));
    out
}

/// Float next to every level, and each level's smallest ring (`--find-min-bits`) next to the
/// bitwidth SIGMA chose for the row.
fn levels_table(report: &Report) -> String {
    let rows: Vec<&RowReport> = report
        .rows
        .iter()
        .filter(|r| !r.skipped && r.float.is_some() && !r.suf.is_empty())
        .collect();
    let levels: Vec<&str> = crate::suf::LEVELS
        .iter()
        .map(|l| l.as_str())
        .filter(|l| rows.iter().any(|r| r.suf.contains_key(*l)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let searched = rows.iter().any(|r| !r.min_bits.is_empty());
    let mut out = String::from("\n## Emulation levels");
    if searched {
        out.push_str(" and the smallest ring");
    }
    out.push_str("\n\n");
    if searched {
        let tol = rows
            .iter()
            .flat_map(|r| r.min_bits.values())
            .map(|m| m.tolerance_pp)
            .next()
            .unwrap_or(0.0);
        // One example is 100/examples pp; a tolerance below it means "no example changed".
        let examples = rows.iter().map(|r| r.examples).min().unwrap_or(1).max(1);
        let resolution = 100.0 / examples as f64;
        out.push_str(&format!(
            "Resolution: one example = {resolution:.3} pp ({examples} examples){}. ",
            if tol < resolution {
                "; the tolerance is below it, so within means no example changed"
            } else {
                ""
            }
        ));
        out.push_str(&format!(
            "min n: the smallest ring size whose accuracy stays within {tol} pp of float (f fixed), \
             found from the overflow statistics and confirmed by evaluation; (p) is the no-wrap prediction. \
             \"none; m*\": no ring reaches float (the level's own arithmetic moves accuracy even at \
             n = 64), and m is the smallest ring that reproduces the level's n = 64 accuracy.\n\n"
        ));
    }
    out.push_str("| Row | Examples | Float Acc |");
    for l in &levels {
        out.push_str(&format!(" {l} Acc |"));
    }
    if searched {
        for l in &levels {
            out.push_str(&format!(" min n {l} |"));
        }
    }
    out.push_str(" Bitwidth (SIGMA) |\n|---|---|---|");
    let cols = levels.len() * if searched { 2 } else { 1 } + 1;
    out.push_str(&"---|".repeat(cols));
    out.push('\n');
    for r in &rows {
        let f = r.float.as_ref().expect("filtered above");
        out.push_str(&format!(
            "| {} | {} | {} |",
            r.id,
            r.examples,
            fmt_pct(f.acc)
        ));
        for l in &levels {
            let cell = r.suf.get(*l).map_or("-".to_string(), |s| fmt_pct(s.acc));
            out.push_str(&format!(" {cell} |"));
        }
        if searched {
            for l in &levels {
                let cell = match r.min_bits.get(*l) {
                    None => "-".to_string(),
                    Some(m) => match (m.min_bits, m.min_bits_no_wrap) {
                        (Some(n), _) => format!("{n} (p {})", m.predicted),
                        (None, Some(n)) => format!("none; {n}* (p {})", m.predicted),
                        (None, None) => "none".to_string(),
                    },
                };
                out.push_str(&format!(" {cell} |"));
            }
        }
        out.push_str(&format!(" {} |\n", r.sigma_ref.bitwidth));
    }
    if searched {
        out.push_str(&searched_rings(&rows, &levels));
    }
    out
}

/// Every ring the search evaluated, with accuracy and float agreement, so the answer can be
/// read against the evidence.
fn searched_rings(rows: &[&RowReport], levels: &[&str]) -> String {
    let mut out = String::from("\nSearched rings (n: accuracy %, agreement with float %):\n\n");
    for r in rows {
        for l in levels {
            if let Some(m) = r.min_bits.get(*l) {
                let trials: Vec<String> = m
                    .trials
                    .iter()
                    .map(|t| {
                        format!(
                            "{}: {} / {}",
                            t.n_bits,
                            fmt_pct(t.acc),
                            fmt_pct(t.agreement)
                        )
                    })
                    .collect();
                out.push_str(&format!("- {} {l}: {}\n", r.id, trials.join("; ")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(commit: &str, row: RowReport) -> Report {
        serde_json::from_value(serde_json::json!({
            "meta": {"tool_version": "0.1.0", "git_commit": commit, "binary_sha256": "ab".repeat(32),
                     "config_sha256": "cd".repeat(32), "config": "c.json", "machine": "m",
                     "started": "s", "finished": null, "complete": true, "device": "cpu", "seed": 0,
                     "max_examples": null, "batch_size": 8, "workers": 1, "emulation": ["output"],
                     "shard": null, "peak_rss_mib": null},
            "rows": [row]
        }))
        .unwrap()
    }

    fn row(examples: u64, val: u64) -> RowReport {
        serde_json::from_value(serde_json::json!({
            "id": "r", "name": "Row", "family": "bert_seqcls", "task": "glue/sst2", "model": "m.onnx",
            "model_sha256": "aa", "seq_len": 8, "n_bits": 37, "frac_bits": 12, "train_size": 67349,
            "val_size": val, "examples": examples, "skipped": false, "skip_reason": null,
            "float": {"acc": 0.75, "acc_pct": 75.0, "runtime_s": 0.0},
            "suf": {"output": {"acc": 0.5, "acc_pct": 50.0, "agreement": 0.5,
                               "logit_abs_diff": {"mean": 0.0, "max": 0.0}, "runtime_s": 0.0}},
            "sigma_ref": {"pytorch_acc": 0.8245, "sigma_acc": 0.8257, "bitwidth": 37, "train_size": 67349, "val_size": 872},
            "delta_pp": {"output": {"suf_float": -25.0, "suf_sigma": -32.57}}, "float_sigma_pp": -7.45,
            "notes": null, "resume_key": "k", "counts": null, "wall_s": 0.0
        }))
        .unwrap()
    }

    #[test]
    fn a_dirty_work_tree_is_marked_in_the_markdown() {
        let dirty = to_markdown(&report("0123abcd-dirty", row(4, 4)), &BTreeMap::new());
        assert!(dirty.contains("**DIRTY BUILD"), "{dirty}");
        let clean = to_markdown(&report("0123abcd", row(4, 4)), &BTreeMap::new());
        assert!(!clean.contains("DIRTY"), "{clean}");
        assert!(clean.contains("binary sha256 `abababababab`"), "{clean}");
    }

    #[test]
    fn the_table_says_what_was_measured() {
        let md = to_markdown(&report("c", row(64, 872)), &BTreeMap::new());
        let line = md.lines().find(|l| l.starts_with("| Row |")).unwrap();
        // Val Size: run (full); tract's float labelled; SIGMA's numbers; output run, sigma not.
        assert!(
            line.starts_with("| Row | SST-2 | 67k | 64 (872) | 75.00 (tract float) | 82.45 | 82.57 | 50.00 | not run | - | 37 | 12 |"),
            "{line}"
        );
        // A PyTorch run of the same ONNX on the same examples replaces tract's number.
        let mut r = row(872, 872);
        r.pytorch = Some(serde_json::json!({"acc": 0.875, "onnx_sha256": "aa", "examples": 872}));
        let md = to_markdown(&report("c", r.clone()), &BTreeMap::new());
        assert!(md.contains("| 872 | 87.50 (PyTorch) |"), "{md}");
        // ...but not one of another file.
        r.pytorch = Some(serde_json::json!({"acc": 0.875, "onnx_sha256": "bb", "examples": 872}));
        let md = to_markdown(&report("c", r), &BTreeMap::new());
        assert!(md.contains("| 872 | 75.00 (tract float) |"), "{md}");
    }

    #[test]
    fn sizes_like_table4() {
        assert_eq!(fmt_size(Some(67_349)), "67k");
        assert_eq!(fmt_size(Some(3_668)), "3.7k");
        assert_eq!(fmt_size(Some(104_743)), "105k");
        assert_eq!(fmt_size(None), "-");
    }
}
