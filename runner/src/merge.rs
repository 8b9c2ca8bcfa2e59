//! `suf-run merge`: shard reports (`--shard K/N`) summed into the report one run would give.
//! Every number is re-derived from the summed exact counts, so they match a single run's bit
//! for bit; only timings (summed over shards) and run metadata differ.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::metrics::DiffAcc;
use crate::report::{self, Phases, Report, RowCounts, RowReport};

pub fn merge_files(
    inputs: &[std::path::PathBuf],
    out_json: &Path,
    out_md: Option<&Path>,
) -> Result<()> {
    let mut reports = Vec::new();
    for p in inputs {
        reports.push((p.display().to_string(), report::read_report(p)?));
    }
    let merged = merge(reports)?;
    report::write_atomic(out_json, &report::to_json(&merged)?)?;
    if let Some(md) = out_md {
        crate::markdown::write(&merged, md)?;
    }
    eprintln!("merged {} shards into {}", inputs.len(), out_json.display());
    Ok(())
}

pub fn merge(mut reports: Vec<(String, Report)>) -> Result<Report> {
    if reports.is_empty() {
        bail!("nothing to merge");
    }
    reports.sort_by_key(|(_, r)| r.meta.shard.as_ref().map(|s| s.index));
    let (first_name, first) = &reports[0];
    let count = first
        .meta
        .shard
        .as_ref()
        .map(|s| s.count)
        .with_context(|| format!("{first_name} is not a shard report (run with --shard K/N)"))?;
    for (i, (name, r)) in reports.iter().enumerate() {
        let Some(shard) = &r.meta.shard else {
            bail!("{name} is not a shard report (run with --shard K/N)");
        };
        if shard.count != count || shard.index != i {
            let have: Vec<String> = reports
                .iter()
                .filter_map(|(_, r)| r.meta.shard.as_ref().map(|s| s.to_string()))
                .collect();
            bail!(
                "shards must be exactly 0/{count} .. {}/{count} once each; got {}",
                count - 1,
                have.join(", ")
            );
        }
        if !r.meta.complete {
            bail!("{name} is incomplete (its run did not finish); rerun that shard with the same --out-json to resume it");
        }
        // Shards of other code must not be summed: the commit and the binary must agree.
        if r.meta.git_commit != first.meta.git_commit {
            bail!(
                "{name} was produced at git commit {}, {first_name} at {}: shards must come from the same build",
                r.meta.git_commit,
                first.meta.git_commit
            );
        }
        if r.meta.binary_sha256 != first.meta.binary_sha256 {
            bail!(
                "{name} was produced by binary sha256 {}, {first_name} by {}: shards must come from the same build",
                r.meta.binary_sha256,
                first.meta.binary_sha256
            );
        }
        let same = r.meta.config_sha256 == first.meta.config_sha256
            && r.meta.emulation == first.meta.emulation
            && r.meta.max_examples == first.meta.max_examples
            && r.meta.batch_size == first.meta.batch_size
            && r.meta.full_logits == first.meta.full_logits
            && r.meta.length_buckets == first.meta.length_buckets;
        if !same {
            bail!("{name} was produced with a different config or options than {first_name}");
        }
        let ids: Vec<&str> = r.rows.iter().map(|r| r.id.as_str()).collect();
        let first_ids: Vec<&str> = first.rows.iter().map(|r| r.id.as_str()).collect();
        if ids != first_ids {
            bail!("{name} has rows {ids:?}, {first_name} has {first_ids:?}");
        }
    }
    if reports.len() != count {
        bail!("have {} of {count} shards", reports.len());
    }

    let mut meta = first.meta.clone();
    meta.shard = None;
    meta.merged_from = Some(reports.iter().map(|(n, _)| n.clone()).collect());
    meta.started = reports
        .iter()
        .map(|(_, r)| r.meta.started.clone())
        .min()
        .unwrap_or_default();
    meta.finished = reports
        .iter()
        .filter_map(|(_, r)| r.meta.finished.clone())
        .max();
    meta.peak_rss_mib = reports
        .iter()
        .filter_map(|(_, r)| r.meta.peak_rss_mib)
        .reduce(f64::max);
    let mut machines: Vec<String> = reports
        .iter()
        .map(|(_, r)| r.meta.machine.clone())
        .collect();
    machines.dedup();
    meta.machine = machines.join(" | ");

    let mut rows = Vec::new();
    for (i, row) in first.rows.iter().enumerate() {
        let parts: Vec<&RowReport> = reports.iter().map(|(_, r)| &r.rows[i]).collect();
        rows.push(merge_row(&parts).with_context(|| format!("row \"{}\"", row.id))?);
    }
    Ok(Report { meta, rows })
}

fn merge_row(parts: &[&RowReport]) -> Result<RowReport> {
    let first = parts[0];
    if parts
        .iter()
        .any(|p| p.resume_key != first.resume_key || p.model_sha256 != first.model_sha256)
    {
        bail!("shards evaluated different inputs (model, data or options differ)");
    }
    if first.skipped {
        if parts.iter().any(|p| !p.skipped) {
            bail!("skipped in some shards but not in others");
        }
        return Ok(first.clone());
    }
    let mut total: Option<RowCounts> = None;
    let mut wall = 0.0;
    // Times add; the peak RSS is the largest shard's, and unknown if any shard's is.
    let mut phases: Option<Phases> = None;
    let mut peak_rss = Some(0.0f64);
    for p in parts {
        let c = p.counts.as_ref().context("a shard row carries no counts")?;
        wall += p.wall_s;
        if let Some(ph) = &p.phases {
            phases.get_or_insert_with(Phases::default).add(ph);
        }
        peak_rss = match (peak_rss, p.peak_rss_mib) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        match &mut total {
            None => total = Some(c.clone()),
            Some(t) => {
                t.float.merge(&c.float);
                t.float_runtime_s += c.float_runtime_s;
                if t.suf.keys().ne(c.suf.keys()) {
                    bail!("shards ran different emulation levels");
                }
                for (level, s) in &c.suf {
                    let e = t.suf.get_mut(level).expect("keys checked above");
                    e.counts.merge(&s.counts);
                    e.agree += s.agree;
                    e.runtime_s += s.runtime_s;
                    e.max_abs_carried = match (e.max_abs_carried, s.max_abs_carried) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    let mut d = DiffAcc::from_stats(&e.diff)?;
                    d.merge(&DiffAcc::from_stats(&s.diff)?);
                    e.diff = d.to_stats();
                }
            }
        }
    }
    let mut out = first.clone();
    out.fill_from_counts(total.context("no shard rows")?)?;
    out.length_buckets = merge_bucket_counts(parts);
    out.wall_s = wall;
    out.phases = phases;
    out.peak_rss_mib = peak_rss;
    // Each shard wrote its own predictions file; the merged row has none of its own.
    out.predictions_sha256 = None;
    for p in &parts[1..] {
        for note in &p.run_notes {
            if !out.run_notes.contains(note) {
                out.run_notes.push(note.clone());
            }
        }
    }
    Ok(out)
}

/// Examples per bucket length, summed over shards (a shard leaves out buckets it had no
/// example for).
fn merge_bucket_counts(parts: &[&RowReport]) -> Vec<crate::report::BucketCount> {
    let mut by_len = std::collections::BTreeMap::<usize, u64>::new();
    for p in parts {
        for b in &p.length_buckets {
            *by_len.entry(b.seq_len).or_default() += b.examples;
        }
    }
    by_len
        .into_iter()
        .map(|(seq_len, examples)| crate::report::BucketCount { seq_len, examples })
        .collect()
}
