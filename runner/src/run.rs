//! A whole run: rows in config order, each evaluated (or skipped, or reused from a previous
//! run of the same output file), with the report rewritten atomically after every row.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use suf_compiler::Emulation;

use crate::buckets::{self, LengthBuckets};
use crate::cache::GraphCache;
use crate::config::{Family, LoadedConfig, MissingModel, Row};
use crate::data;
use crate::device::Device;
use crate::engine::Parsed;
use crate::evaluate::{self, Graphs, Prediction};
use crate::hash;
use crate::labels;
use crate::logit_slots;
use crate::min_bits::{self, MinBits};
use crate::plans::GraphPlans;
use crate::predictions::{self, RowPredictions};
use crate::provenance;
use crate::report::{self, BucketCount, GraphPhases, Meta, Phases, Report, RowReport, ShardSpec};
use crate::suf;
use crate::sysinfo;
use crate::tokenize::{self, Inputs};
use suf_compiler::panic_guard;

pub const DEFAULT_BATCH_SIZE: usize = 8;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    pub out_json: PathBuf,
    pub out_md: Option<PathBuf>,
    pub device: Option<String>,
    pub max_examples: Option<usize>,
    pub batch_size: Option<usize>,
    pub seed: Option<u64>,
    pub cache_dir: Option<PathBuf>,
    pub strict_sigma_match: bool,
    pub rows: Option<Vec<String>>,
    pub emulation: Vec<Emulation>,
    pub predictions_out: Option<PathBuf>,
    pub shard: Option<ShardSpec>,
    /// `--find-min-bits`: search each level's smallest ring within this tolerance (pp).
    pub find_min_bits: Option<f64>,
    /// `--full-logits`: decoder rows compute the vocabulary logits at every position, as
    /// exported, instead of only at the positions LAMBADA reads (the default rewrite,
    /// `suf_compiler::logit_positions`).
    pub full_logits: bool,
    /// `--no-length-buckets` / `--length-buckets`: overrides `global.length_buckets`.
    pub length_buckets: Option<LengthBuckets>,
}

/// SIGMA-match tolerance of `--strict-sigma-match`, in percentage points (FuseFSS uses 1.0).
pub const SIGMA_TOLERANCE_PP: f64 = 1.0;

pub fn run(opts: &RunOptions) -> Result<Report> {
    run_with(&LoadedConfig::load(&opts.config)?, opts)
}

/// A run of an already loaded configuration (a file, or the one row of `suf-run --model`).
pub fn run_with(loaded: &LoadedConfig, opts: &RunOptions) -> Result<Report> {
    let global = &loaded.config.global;
    // The config's `full_logits` or the flag: either turns the rewrite off.
    let opts = &RunOptions {
        full_logits: opts.full_logits || global.full_logits,
        ..opts.clone()
    };
    let device: Device = opts
        .device
        .as_deref()
        .unwrap_or(&global.default_device)
        .parse()?;
    device.check()?;
    if let Some(tol) = opts.find_min_bits {
        if opts.shard.is_some() {
            bail!(
                "--find-min-bits cannot be combined with --shard: the search evaluates whole rows"
            );
        }
        if opts.emulation.is_empty() {
            bail!("--find-min-bits needs at least one emulation level (--emulation output,ring,sigma)");
        }
        if !(tol.is_finite() && tol >= 0.0) {
            bail!("--min-bits-tolerance must be a non-negative number of percentage points (got {tol})");
        }
    }
    let bucket_setting = opts
        .length_buckets
        .clone()
        .unwrap_or_else(|| global.length_buckets.clone());
    let bucket_lengths = bucket_setting
        .lengths(global.seq_len)
        .context("--length-buckets")?;
    let selected = select_rows(&loaded.config.rows, opts.rows.as_deref())?;
    let batch_size = opts
        .batch_size
        .or(global.batch_size)
        .unwrap_or(DEFAULT_BATCH_SIZE);
    if batch_size == 0 {
        bail!("--batch-size must be > 0");
    }
    if opts.max_examples.or(global.max_examples) == Some(0) {
        bail!("max_examples is 0: nothing would be evaluated (use at least 1, or leave it out)");
    }
    let workers = match global.num_workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .context("cannot start worker threads")?;
    let previous = previous_rows(&opts.out_json, opts.shard.as_ref())?;
    // Predictions of rows a resumed run reuses come from the file the earlier run wrote.
    let previous_predictions = match &opts.predictions_out {
        Some(p) => predictions::read(p)?,
        None => HashMap::new(),
    };

    let mut report = Report {
        meta: Meta {
            tool_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: sysinfo::git_commit(),
            binary_sha256: provenance::binary_sha256(),
            config_sha256: loaded.sha256.clone(),
            config: opts.config.display().to_string(),
            machine: sysinfo::machine(),
            started: sysinfo::now_rfc3339(),
            finished: None,
            complete: false,
            device: device.to_string(),
            seed: opts.seed.unwrap_or(global.seed),
            max_examples: opts.max_examples.or(global.max_examples),
            batch_size,
            workers,
            emulation: opts.emulation.iter().map(|l| l.to_string()).collect(),
            shard: opts.shard.clone(),
            merged_from: None,
            peak_rss_mib: None,
            full_logits: opts.full_logits,
            length_buckets: (!bucket_setting.is_off()).then(|| bucket_lengths.clone()),
        },
        rows: Vec::new(),
    };
    let ctx = RowContext {
        loaded,
        opts,
        batch_size,
        pool: &pool,
        seed: report.meta.seed,
        max_examples: report.meta.max_examples,
        cache_dir: opts.cache_dir.clone().or_else(|| global.cache_dir.clone()),
        device,
        bucket_lengths,
    };
    let mut predictions: Vec<RowPredictions> = Vec::new();
    let mut rss = sysinfo::PeakRss::default();
    for (row, explicitly_selected) in selected {
        let key = ctx.resume_key(row)?;
        let finished = previous
            .get(&row.id)
            .filter(|r| r.resume_key == key && !r.skipped && r.counts.is_some());
        // A reused row keeps its predictions only if the earlier file holds exactly the
        // lines that run wrote for it (their digest is in the report); otherwise it runs again.
        let reusable = finished.and_then(|done| match &opts.predictions_out {
            None => Some((done, None)),
            Some(path) => {
                let lines = previous_predictions
                    .get(&row.id)
                    .filter(|l| Some(predictions::digest(l)) == done.predictions_sha256);
                if lines.is_none() {
                    eprintln!(
                        "row {}: finished in {}, but {} lacks its predictions: evaluating it again",
                        row.id,
                        opts.out_json.display(),
                        path.display()
                    );
                }
                lines.map(|l| (done, Some(l.clone())))
            }
        });
        if let Some((done, lines)) = reusable {
            eprintln!(
                "row {}: already finished in {}, reusing it",
                row.id,
                opts.out_json.display()
            );
            report.rows.push(done.clone());
            if let Some(lines) = lines {
                predictions.push(RowPredictions {
                    row: row.id.clone(),
                    lines,
                });
            }
        } else {
            panic_guard::set_model(Some(format!("{} (row {})", row.model, row.id)));
            let rss_reset = rss.start_row();
            let (mut row_report, preds) = ctx
                .evaluate_row(row, key, explicitly_selected)
                .with_context(|| format!("row \"{}\"", row.id))?;
            panic_guard::set_model(None);
            if !row_report.skipped {
                row_report.peak_rss_mib = rss.finish_row(&rss_reset);
                if let Err(why) = &rss_reset {
                    row_report
                        .run_notes
                        .push(format!("peak RSS of the row not measured: {why}"));
                }
                log_row(&row_report);
            }
            if opts.predictions_out.is_some() && !row_report.skipped {
                let block = predictions::lines(&row.id, &preds)?;
                row_report.predictions_sha256 = Some(predictions::digest(&block.lines));
                predictions.push(block);
            }
            report.rows.push(row_report);
        }
        report.meta.peak_rss_mib = rss.process();
        write_outputs(&report, opts)?;
        if let Some(path) = &opts.predictions_out {
            predictions::write(path, &predictions)?;
        }
    }
    report.meta.finished = Some(sysinfo::now_rfc3339());
    report.meta.complete = true;
    report.meta.peak_rss_mib = rss.process();
    write_outputs(&report, opts)?;
    check_something_evaluated(&report, opts.shard.is_some())?;
    if opts.strict_sigma_match {
        check_sigma_match(&report)?;
    }
    Ok(report)
}

/// Rows to run, in config order; `--rows` ids must all exist. The flag says the user named the row.
fn select_rows<'a>(rows: &'a [Row], wanted: Option<&[String]>) -> Result<Vec<(&'a Row, bool)>> {
    let Some(wanted) = wanted else {
        return Ok(rows.iter().map(|r| (r, false)).collect());
    };
    for id in wanted {
        if !rows.iter().any(|r| &r.id == id) {
            let known: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
            bail!(
                "unknown row id \"{id}\" in --rows (config has: {})",
                known.join(", ")
            );
        }
    }
    Ok(rows
        .iter()
        .filter(|r| wanted.contains(&r.id))
        .map(|r| (r, true))
        .collect())
}

/// Finished rows of an earlier run writing the same file, for resuming. A file that is not a
/// report is an error rather than something to overwrite.
fn previous_rows(out_json: &Path, shard: Option<&ShardSpec>) -> Result<HashMap<String, RowReport>> {
    if !out_json.exists() {
        return Ok(HashMap::new());
    }
    let previous = report::read_report(out_json)
        .map_err(|e| anyhow!("{e:#}; remove it or choose another --out-json"))?;
    if previous.meta.shard.as_ref() != shard {
        return Ok(HashMap::new());
    }
    Ok(previous
        .rows
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect())
}

fn write_outputs(report: &Report, opts: &RunOptions) -> Result<()> {
    report::write_atomic(&opts.out_json, &report::to_json(report)?)?;
    if let Some(md) = &opts.out_md {
        crate::markdown::write(report, md)?;
    }
    Ok(())
}

/// A run that evaluated no example measured nothing; exiting 0 with 0.00% would pass for a
/// result. (A shard's slice may legitimately be empty; its merge still counts.)
fn check_something_evaluated(report: &Report, sharded: bool) -> Result<()> {
    if report
        .rows
        .iter()
        .any(|r| !r.skipped && (r.examples > 0 || sharded))
    {
        return Ok(());
    }
    let why: Vec<String> = report
        .rows
        .iter()
        .map(|r| match &r.skip_reason {
            Some(reason) if r.skipped => format!("{}: {reason}", r.id),
            _ => format!("{}: no examples", r.id),
        })
        .collect();
    bail!(
        "no example was evaluated ({} rows, none ran; the report lists them): {}",
        report.rows.len(),
        if why.is_empty() {
            "the config has no rows".to_string()
        } else {
            why.join("; ")
        }
    )
}

fn check_sigma_match(report: &Report) -> Result<()> {
    let off: Vec<String> = report
        .rows
        .iter()
        .filter_map(|r| {
            r.float_sigma_pp
                .filter(|d| d.abs() > SIGMA_TOLERANCE_PP)
                .map(|d| format!("{} ({d:+.2} pp)", r.id))
        })
        .collect();
    if !off.is_empty() {
        bail!(
            "--strict-sigma-match: float accuracy differs from SIGMA's PyTorch column by more than {SIGMA_TOLERANCE_PP} pp: {}",
            off.join(", ")
        );
    }
    Ok(())
}

/// Contiguous slice `index` of `count` over `n` items (balanced; every item in exactly one slice).
pub fn shard_range(n: usize, shard: Option<&ShardSpec>) -> std::ops::Range<usize> {
    match shard {
        None => 0..n,
        Some(s) => (n * s.index / s.count)..(n * (s.index + 1) / s.count),
    }
}

struct RowContext<'a> {
    loaded: &'a LoadedConfig,
    opts: &'a RunOptions,
    batch_size: usize,
    pool: &'a rayon::ThreadPool,
    seed: u64,
    max_examples: Option<usize>,
    cache_dir: Option<PathBuf>,
    device: Device,
    /// Length buckets (ascending, the last seq_len; only seq_len when off).
    bucket_lengths: Vec<usize>,
}

impl RowContext<'_> {
    /// Everything that decides a row's numbers: the binary, the row, every file it reads
    /// (the model with its external data, the tokenizer's files, the data, the export and
    /// PyTorch records beside the model, swapped-in SUF descriptions), and the options.
    fn resume_key(&self, row: &Row) -> Result<String> {
        let file_hash = |path: &Path| {
            if path.is_file() {
                hash::sha256_file(path).map(Some)
            } else {
                Ok(None)
            }
        };
        let model_path = self.loaded.resolve(&row.model);
        let model = if model_path.is_file() {
            Some(provenance::model_files(&model_path)?)
        } else {
            None
        };
        let mut tokenizer = BTreeMap::new();
        for f in tokenize::tokenizer_files(&self.loaded.resolve(&row.tokenizer)) {
            tokenizer.insert(f.display().to_string(), file_hash(&f)?);
        }
        let key = serde_json::json!({
            "tool_version": env!("CARGO_PKG_VERSION"),
            "binary_sha256": provenance::binary_sha256(),
            "row": row,
            "seq_len": self.loaded.config.global.seq_len,
            "frac_bits": row.frac_bits(&self.loaded.config.global),
            "model": model,
            "tokenizer": tokenizer,
            "data": file_hash(&self.loaded.resolve(&row.data))?,
            "export_record": file_hash(&labels::export_record(&model_path))?,
            "pytorch_record": file_hash(&report::pytorch_record(&model_path))?,
            "approx_override": provenance::approx_override()?,
            "max_examples": self.max_examples,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "emulation": self.opts.emulation,
            "find_min_bits": self.opts.find_min_bits,
            // Another logit layout is another float GEMM (row count) and another graph.
            "full_logits": self.opts.full_logits,
            // Float logits differ between devices by float rounding: another device is
            // other code, never a reused row.
            "device": self.device.as_str(),
            // Another padding length is another shape: float logits may differ in the last
            // bits (tract's kernel blocking), so buckets on or off is another computation.
            "length_buckets": self.bucket_lengths,
        });
        Ok(hash::sha256_hex(key.to_string().as_bytes()))
    }

    fn evaluate_row(
        &self,
        row: &Row,
        key: String,
        explicitly_selected: bool,
    ) -> Result<(RowReport, Vec<Prediction>)> {
        let global = &self.loaded.config.global;
        let seq_len = global.seq_len;
        let frac_bits = row.frac_bits(global);
        let mut out = RowReport::pending(row, frac_bits, seq_len, key);
        if row.skip {
            let reason = row.skip_reason.clone().unwrap_or_default();
            eprintln!("row {}: skipped ({reason})", row.id);
            return Ok((out.skip(reason), vec![]));
        }
        let model_path = self.loaded.resolve(&row.model);
        if !model_path.is_file() {
            let hint = row.export_hint.clone().unwrap_or_else(|| {
                let family = match row.family {
                    crate::config::Family::BertSeqCls => "bert",
                    crate::config::Family::GptLm => "gpt",
                };
                format!(
                    "python3 scripts/export_onnx.py --hf HUB_ID_OR_DIR --family {family} --out {}",
                    row.model
                )
            });
            let reason = format!("model file not found: {} ({hint})", row.model);
            if explicitly_selected || global.on_missing_model == MissingModel::Error {
                bail!(reason);
            }
            eprintln!("row {}: skipped ({reason})", row.id);
            return Ok((out.skip(reason), vec![]));
        }
        let started = Instant::now();
        let examples = data::load(row.task, &self.loaded.resolve(&row.data))?;
        out.val_size = Some(examples.len() as u64);
        let limited = &examples[..self
            .max_examples
            .map_or(examples.len(), |m| m.min(examples.len()))];
        let range = shard_range(limited.len(), self.opts.shard.as_ref());
        let indices: Vec<usize> = range.clone().collect();
        let chosen = &limited[range];
        let tokenizer = tokenize::load_tokenizer(&self.loaded.resolve(&row.tokenizer))?;
        let inputs = tokenize::encode(row.family, &tokenizer, chosen, seq_len)?;
        let logit_width = self.logit_width(row, &inputs, limited, &tokenizer)?;
        out.logit_width = logit_width;
        let model_files = provenance::model_files(&model_path)?;
        let model_sha256 = hash::sha256_file(&model_path)?;
        out.external_data_sha256 = model_files
            .iter()
            .skip(1)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.pytorch = report::read_pytorch_record(&model_path, &model_sha256)?;
        out.model_sha256 = Some(model_sha256);
        let mut phases = Phases {
            prepare_s: started.elapsed().as_secs_f64(),
            ..Default::default()
        };
        let recomputed_before = suf_gpu::ring_fn::host_recomputed();
        let (tally, predictions, min_bits) = if inputs.is_empty() {
            (empty_tally(&self.opts.emulation), vec![], BTreeMap::new())
        } else {
            self.run_graphs(
                row,
                &model_path,
                model_files,
                &inputs,
                &indices,
                logit_width,
                &mut out.run_notes,
                &mut phases,
                &mut out.length_buckets,
            )?
        };
        out.fill_from_counts(report::counts_from_tally(&tally))?;
        out.min_bits = min_bits;
        out.wall_s = started.elapsed().as_secs_f64();
        phases.total_s = out.wall_s;
        phases.ring_tensors_recomputed_on_cpu =
            suf_gpu::ring_fn::host_recomputed() - recomputed_before;
        out.phases = Some(phases);
        Ok((out, predictions))
    }

    /// W of the logit-positions rewrite for a decoder row (None: classifier rows, whose head
    /// already reads one vector per example, or `--full-logits`). It is the row's, not a
    /// shard's: every shard then runs the batches a single run does (the same GEMM shapes),
    /// so merged numbers stay bit-identical; a shard tokenizes the whole row to know it.
    fn logit_width(
        &self,
        row: &Row,
        inputs: &Inputs,
        all: &[data::Example],
        tokenizer: &tokenizers::Tokenizer,
    ) -> Result<Option<usize>> {
        let Inputs::Lm(chosen) = inputs else {
            return Ok(None);
        };
        if self.opts.full_logits {
            return Ok(None);
        }
        if chosen.len() == all.len() {
            return Ok(Some(logit_slots::width(chosen)));
        }
        let seq_len = self.loaded.config.global.seq_len;
        match tokenize::encode(row.family, tokenizer, all, seq_len)? {
            Inputs::Lm(every) => Ok(Some(logit_slots::width(&every))),
            Inputs::Classify(_) => bail!("a decoder row tokenized as a classifier"),
        }
    }

    /// The row's length buckets and the examples each holds, and lines for the log (printed
    /// once the graph passed its checks, so that an error stays one line). A classifier graph without an
    /// attention_mask input would let padding reach the real tokens: it runs unbucketed.
    fn schedule(
        &self,
        row: &Row,
        proto: &suf_compiler::ModelProto,
        inputs: &Inputs,
        notes: &mut Vec<String>,
    ) -> Result<(Vec<buckets::Bucket>, Vec<String>)> {
        let seq_len = self.loaded.config.global.seq_len;
        let mut lengths = self.bucket_lengths.clone();
        let mut log = vec![];
        if lengths.len() > 1 {
            let masked = proto
                .graph
                .as_ref()
                .is_some_and(|g| g.input.iter().any(|i| i.name == "attention_mask"));
            let line = if row.family == Family::BertSeqCls && !masked {
                lengths = vec![seq_len];
                format!("length buckets not used: the graph has no attention_mask input, so padding would reach the real tokens; every example padded to {seq_len}")
            } else {
                format!(
                    "padded to length buckets {} (each example to the smallest holding its tokens; --no-length-buckets pads every one to {seq_len})",
                    buckets::describe(&lengths)
                )
            };
            log.push(line.clone());
            notes.push(line);
        }
        let schedule = buckets::schedule(inputs, &lengths)?;
        let used: Vec<String> = schedule
            .iter()
            .map(|b| format!("{}: {}", b.seq_len, b.items.len()))
            .collect();
        log.push(format!("examples per padded length: {}", used.join(", ")));
        Ok((schedule, log))
    }

    #[allow(clippy::too_many_arguments)]
    fn run_graphs(
        &self,
        row: &Row,
        model_path: &Path,
        model_files: BTreeMap<String, String>,
        inputs: &Inputs,
        indices: &[usize],
        logit_width: Option<usize>,
        notes: &mut Vec<String>,
        phases: &mut Phases,
        bucket_counts: &mut Vec<BucketCount>,
    ) -> Result<(
        evaluate::RowTally,
        Vec<Prediction>,
        BTreeMap<String, MinBits>,
    )> {
        let global = &self.loaded.config.global;
        let framework = suf::framework();
        let t_load = Instant::now();
        let proto = suf::load_model(model_path)?;
        match crate::engine::embedding_rows(&proto) {
            Some(rows) => {
                if let Some(id) = max_token_id(inputs).filter(|&id| id >= rows) {
                    bail!(
                        "token id {id} from tokenizer {} is outside the model's vocabulary of {rows}: the tokenizer does not belong to this model",
                        row.tokenizer
                    );
                }
            }
            None => notes.push(
                "vocabulary check skipped: no Gather of input_ids from an initializer tells the model's vocabulary size".into(),
            ),
        }
        let seq_len = global.seq_len;
        // Before the float graph and the SUF pass, so that both compute the same positions.
        let proto = match logit_width {
            Some(w) => {
                // Normalized first (the float graph and the SUF pass apply the same exact
                // clean-ups anyway), so an exporter's trailing Identity is not in the way.
                let mut proto = proto;
                if let Some(g) = proto.graph.as_mut() {
                    suf_compiler::normalize::normalize(g);
                }
                let r = suf_compiler::logit_positions::restrict(proto, w).context(
                    "computing logits only where they are read (--full-logits computes them at every position)",
                )?;
                let line = format!(
                    "logits at {w} of {seq_len} positions per example (the prompt's last {w}, the most any example reads; {} projects only those)",
                    r.projection
                );
                eprintln!("row {}: {line}", row.id);
                notes.push(line);
                r.model
            }
            None => {
                if row.family == Family::GptLm {
                    eprintln!(
                        "row {}: logits at all {seq_len} positions (--full-logits)",
                        row.id
                    );
                }
                proto
            }
        };
        let dir = model_path.parent();
        let (schedule, log) = self.schedule(row, &proto, inputs, notes)?;
        let lengths: Vec<usize> = schedule.iter().map(|b| b.seq_len).collect();
        // Always the configured batch (short batches are padded): a shard then computes each
        // example with exactly the kernels a single run uses, so merged numbers match bit for bit.
        let batch = self.batch_size;
        // tract's parses are counted by `record_plans`; this is reading the model and the
        // rewrites before them.
        phases.load_s += t_load.elapsed().as_secs_f64();
        let cache = self
            .cache_dir
            .as_deref()
            .map(|d| GraphCache::new(d, model_files, logit_width))
            .transpose()?;
        let frac_bits = row.frac_bits(global);
        // Memory: the SUF graphs are parsed first and the float graph last, so each rewritten
        // model goes as soon as its parse exists and the model itself as soon as the float
        // graph is parsed (the bitwidth search keeps it: it recompiles per trial). The price:
        // the float plan's checks (label order) come after the SUF pass.
        let mut suf_plans = Vec::new();
        let mut compile_times = BTreeMap::new();
        for level in &self.opts.emulation {
            let t_compile = Instant::now();
            let rewritten = compile_cached(
                cache.as_ref(),
                &proto,
                &row.id,
                row.n_bits,
                frac_bits,
                *level,
            )?;
            compile_times.insert(level.to_string(), t_compile.elapsed());
            // Compiled once; typed per bucket (the SUF pass does not depend on the shape).
            let parsed = Parsed::new(&framework, &rewritten, dir)
                .with_context(|| format!("SUF graph ({level})"))?;
            suf_plans.push((
                level.to_string(),
                GraphPlans::new(level.as_str(), self.device, parsed, batch, &lengths),
            ));
        }
        // In place, not `suf::normalized` (a copy of every weight): the SUF pass, the
        // bitwidth search's too, normalizes its input the same way first.
        let mut proto = proto;
        if let Some(g) = proto.graph.as_mut() {
            suf_compiler::normalize::normalize(g);
        }
        let parsed = Parsed::new(&framework, &proto, dir).context("float graph")?;
        let proto = self.opts.find_min_bits.map(|_| proto);
        let mut float = GraphPlans::new("float", self.device, parsed, batch, &lengths);
        let first = float.engine(lengths[0]).context("float graph")?;
        notes.extend(first.notes.iter().cloned());
        if row.family == Family::BertSeqCls {
            let classes = first.output_shape.last().copied().unwrap_or(0);
            let map = labels::find(row.label_map.as_ref(), model_path)?;
            if let Some(note) = labels::check(row.task, classes, map.as_ref())? {
                eprintln!("row {}: {note}", row.id);
                notes.push(note);
            }
        }
        for line in log {
            eprintln!("row {}: {line}", row.id);
        }
        let progress = ProgressBar::new(inputs.len() as u64);
        progress.set_style(
            ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        progress.set_prefix(row.id.clone());
        suf_compiler::stats::reset_carried();
        let mut graphs = Graphs {
            float,
            suf: suf_plans,
        };
        let mut evaluation = evaluate::evaluate(
            inputs,
            indices,
            &schedule,
            &mut graphs,
            self.pool,
            &progress,
        )?;
        progress.finish_and_clear();
        record_plans(phases, &graphs, &compile_times, &evaluation.buckets);
        bucket_counts.extend(evaluation.buckets.iter().map(|b| BucketCount {
            seq_len: b.seq_len,
            examples: b.examples as u64,
        }));
        for (level, tally) in evaluation.tally.suf.iter_mut() {
            let level: suf_compiler::Emulation = level.parse().map_err(|e: String| anyhow!(e))?;
            if level.carries_ring() {
                tally.max_abs_carried = Some(suf_compiler::stats::carried_max(level));
            }
        }
        drop(graphs);
        let mut min_bits = BTreeMap::new();
        if let (Some(tolerance_pp), Some(proto)) = (self.opts.find_min_bits, &proto) {
            let t_search = Instant::now();
            let float_preds: Vec<i64> = evaluation.predictions.iter().map(|p| p.float).collect();
            let compile = |n_bits: u32, level: Emulation| {
                compile_cached(cache.as_ref(), proto, &row.id, n_bits, frac_bits, level)
            };
            let search = min_bits::Search {
                row_id: &row.id,
                compile: &compile,
                model_dir: dir,
                framework: &framework,
                inputs,
                batch,
                device: self.device,
                buckets: &schedule,
                frac_bits: row.frac_bits(global),
                float_counts: evaluation.tally.float.counts,
                float_preds: &float_preds,
                pool: self.pool,
                tolerance_pp,
            };
            // One example moves accuracy by 100/examples pp: a tolerance below that only
            // accepts rings where no example changes, which the user should know.
            let resolution_pp = 100.0 / inputs.len() as f64;
            eprintln!(
                "row {}: min-bits tolerance {tolerance_pp} pp; resolution {resolution_pp:.3} pp (one of {} examples){}",
                row.id,
                inputs.len(),
                if tolerance_pp < resolution_pp {
                    " -- warning: the tolerance is below the resolution, so `within` means no example changed"
                } else {
                    ""
                }
            );
            for level in &self.opts.emulation {
                let found = search
                    .run(*level)
                    .with_context(|| format!("--find-min-bits, level {level}"))?;
                eprintln!(
                    "row {}: min-bits {level}: {} (no-wrap prediction {}, row's n_bits {})",
                    row.id,
                    match (found.min_bits, found.min_bits_no_wrap) {
                        (Some(n), _) => n.to_string(),
                        (None, Some(n)) => format!(
                            "none within the tolerance of float; {n} reproduces the level's n = 64 accuracy"
                        ),
                        (None, None) => "none".to_string(),
                    },
                    found.predicted,
                    row.n_bits
                );
                min_bits.insert(level.to_string(), found);
            }
            phases.min_bits_s = Some(t_search.elapsed().as_secs_f64());
        }
        Ok((evaluation.tally, evaluation.predictions, min_bits))
    }
}

/// The rewrite of `proto` for (n_bits, level), from `--cache-dir` when it holds one.
fn compile_cached(
    cache: Option<&GraphCache>,
    proto: &suf_compiler::ModelProto,
    row_id: &str,
    n_bits: u32,
    frac_bits: u32,
    level: Emulation,
) -> Result<suf_compiler::ModelProto> {
    let fresh = || suf::compile(proto, n_bits, frac_bits, level);
    let Some(c) = cache else {
        return fresh();
    };
    let (m, hit) = c.get_or_compile(n_bits, frac_bits, level, fresh)?;
    if hit {
        eprintln!(
            "row {row_id}: {level} at n_bits = {n_bits}: compiled graph from the cache ({})",
            c.path(&c.key(n_bits, frac_bits, level)).display()
        );
    }
    Ok(m)
}

/// The graphs' build times and the buckets' evaluation into the row's phases: tract's parse
/// counts as loading, every bucket's plan as optimisation, each bucket's batches as
/// evaluation (plans are built between buckets, never inside `evaluate_s`).
fn record_plans(
    phases: &mut Phases,
    graphs: &Graphs,
    compile: &BTreeMap<String, Duration>,
    runs: &[evaluate::BucketRun],
) {
    let all = std::iter::once(&graphs.float).chain(graphs.suf.iter().map(|(_, p)| p));
    for plans in all {
        let parse = plans.parse.as_secs_f64();
        let optimise = plans.optimise_total().as_secs_f64();
        let compile = compile.get(plans.name()).map(|d| d.as_secs_f64());
        phases.load_s += parse;
        phases.optimise_s += optimise;
        phases.compile_s += compile.unwrap_or(0.0);
        phases.graphs.insert(
            plans.name().to_string(),
            GraphPhases {
                load_s: parse,
                compile_s: compile,
                optimise_s: optimise,
                placement: plans.placement.clone(),
            },
        );
        for (len, d) in &plans.optimise {
            phases.buckets.entry(*len).or_default().optimise_s += d.as_secs_f64();
        }
    }
    for run in runs {
        let e = phases.buckets.entry(run.seq_len).or_default();
        e.batches += run.batches;
        e.evaluate_s += run.evaluate.as_secs_f64();
        phases.evaluate_s += run.evaluate.as_secs_f64();
    }
}

fn max_token_id(inputs: &Inputs) -> Option<i64> {
    match inputs {
        Inputs::Classify(v) => v.iter().flat_map(|e| e.input_ids.iter()).max().copied(),
        Inputs::Lm(v) => v
            .iter()
            .flat_map(|e| e.prompt.iter().chain([&e.label]))
            .max()
            .copied(),
    }
}

fn empty_tally(levels: &[Emulation]) -> evaluate::RowTally {
    let mut t = evaluate::RowTally::default();
    for l in levels {
        t.suf.insert(l.to_string(), Default::default());
    }
    t
}

fn log_row(r: &RowReport) {
    let float = r
        .float
        .as_ref()
        .map(|f| format!("{:.2}%", f.acc * 100.0))
        .unwrap_or_default();
    let suf: Vec<String> = r
        .suf
        .iter()
        .map(|(l, s)| {
            let carried = s
                .max_abs_carried
                .map(|m| format!(", max |x| carried exactly {m}"))
                .unwrap_or_default();
            format!(
                "SUF[{l}] {:.2}% (agreement {:.2}%{carried})",
                s.acc * 100.0,
                s.agreement * 100.0
            )
        })
        .collect();
    let phases = r
        .phases
        .as_ref()
        .map(|p| {
            format!(
                " (prepare {:.1}, load {:.1}, compile {:.1}, optimise {:.1}, evaluate {:.1}{} s)",
                p.prepare_s,
                p.load_s,
                p.compile_s,
                p.optimise_s,
                p.evaluate_s,
                p.min_bits_s
                    .map(|m| format!(", min-bits search {m:.1}"))
                    .unwrap_or_default()
            ) + &match p.ring_tensors_recomputed_on_cpu {
                0 => String::new(),
                k => format!(
                    ", {k} tensors of level ring's functions recomputed on the CPU (outputs the GPU could not certify)"
                ),
            }
        })
        .unwrap_or_default();
    let rss = match r.peak_rss_mib {
        Some(m) => format!(", peak RSS {m:.0} MiB"),
        None => ", peak RSS not measured".into(),
    };
    eprintln!(
        "row {}: {} of {} examples, float {float} {} in {:.1} s{phases}{rss}",
        r.id,
        r.examples,
        r.val_size.unwrap_or(0),
        suf.join(" "),
        r.wall_s
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_index_once() {
        for n in [0, 1, 7, 872] {
            for count in [1, 2, 3, 5] {
                let mut all = Vec::new();
                for index in 0..count {
                    all.extend(shard_range(n, Some(&ShardSpec { index, count })));
                }
                assert_eq!(all, (0..n).collect::<Vec<_>>());
            }
        }
    }
}
