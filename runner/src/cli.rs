//! `suf-run` command line: evaluate a config (`suf-run --config ...`) or one model given by
//! flags (`suf-run --model ...`), diagnose a row, or merge shard reports (`suf-run merge ...`).
//! Errors print as one line and exit 1; usage errors exit 2.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use suf_compiler::outpath::check_writable;

use crate::buckets::LengthBuckets;
use crate::report::ShardSpec;
use crate::run::{self, RunOptions};
use crate::single::{self, SingleModel};

/// Values of `--emulation` (a comma-separated list of levels, or `none`).
const EMULATION_VALUES: [&str; 4] = ["none", "output", "ring", "sigma"];

#[derive(Debug, Parser)]
#[command(
    name = "suf-run",
    version = crate::sysinfo::VERSION,
    about = "Evaluate original vs SUF-rewritten ONNX graphs in tract over GLUE/LAMBADA (SIGMA Table 4)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Run configuration (SPEC section 5), e.g. configs/accuracy_table4.json
    #[arg(long, conflicts_with = "model")]
    config: Option<PathBuf>,
    /// Single-model run without a config: the ONNX model to evaluate (with --tokenizer,
    /// --task, --data, --n-bits)
    #[arg(long, help_heading = "Single model (instead of --config)")]
    model: Option<PathBuf>,
    /// tokenizer.json (or vocab.txt / vocab.json + merges.txt) of --model
    #[arg(
        long,
        requires = "model",
        help_heading = "Single model (instead of --config)"
    )]
    tokenizer: Option<PathBuf>,
    /// glue/sst2, glue/mrpc, glue/qnli or lambada_openai
    #[arg(long, requires = "model", value_parser = ["glue/sst2", "glue/mrpc", "glue/qnli", "lambada_openai"],
          help_heading = "Single model (instead of --config)")]
    task: Option<String>,
    /// Evaluation file of --task (GLUE TSV/jsonl, LAMBADA jsonl)
    #[arg(
        long,
        requires = "model",
        help_heading = "Single model (instead of --config)"
    )]
    data: Option<PathBuf>,
    /// Ring size n of --model's SUF graph
    #[arg(
        long,
        requires = "model",
        help_heading = "Single model (instead of --config)"
    )]
    n_bits: Option<u32>,
    /// Fractional bits f of --model's SUF graph
    #[arg(long, requires = "model", default_value_t = suf_fixed::DEFAULT_FRAC_BITS,
          help_heading = "Single model (instead of --config)")]
    frac_bits: u32,
    /// Protocol of --model (default: the task's: bert_seqcls for GLUE, gpt_lm for LAMBADA)
    #[arg(long, requires = "model", value_parser = ["bert_seqcls", "gpt_lm"],
          help_heading = "Single model (instead of --config)")]
    family: Option<String>,
    /// Row id in the report (default: --model's file stem)
    #[arg(
        long,
        requires = "model",
        help_heading = "Single model (instead of --config)"
    )]
    id: Option<String>,
    /// Table 4 model whose numbers fill the SIGMA columns (default: the task's smallest)
    #[arg(long, requires = "model", value_parser = ["bert-tiny", "bert-base", "bert-large", "gpt2", "gpt-neo-1.3b"],
          help_heading = "Single model (instead of --config)")]
    sigma_ref: Option<String>,
    /// JSON report; rewritten after every row, and a restart with the same path skips finished
    /// rows (single-model runs: default out/<id>.json)
    #[arg(long)]
    out_json: Option<PathBuf>,
    /// Markdown report in the Table 4 layout
    #[arg(long)]
    out_md: Option<PathBuf>,
    /// Where the graphs run: cpu (tract) or cuda (tract-cuda on an NVIDIA GPU; SUF nodes
    /// without a GPU kernel run on the CPU and are reported) (default: the config's
    /// default_device)
    #[arg(long)]
    device: Option<String>,
    /// Evaluate only the first N examples of every row
    #[arg(long)]
    max_examples: Option<usize>,
    /// Examples per tract run (default: config, else 8)
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seed recorded in the report (evaluation itself is deterministic)
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for compiled SUF graphs, reused across runs (default: config cache_dir)
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Fail when a row's float accuracy is more than 1.0 pp off SIGMA's PyTorch column
    #[arg(long)]
    strict_sigma_match: bool,
    /// Only these row ids (comma-separated); a named row whose model is missing is an error
    #[arg(long, value_delimiter = ',')]
    rows: Option<Vec<String>>,
    /// Emulation levels to run, comma-separated: output, ring, sigma; "none" runs the float graph only
    #[arg(long, value_delimiter = ',', default_value = "output", value_parser = EMULATION_VALUES)]
    emulation: Vec<String>,
    /// Write every example's float and SUF predictions as JSON lines
    #[arg(long)]
    predictions_out: Option<PathBuf>,
    /// Evaluate slice K of N (0-based) of every row, e.g. 0/4; combine with `suf-run merge`
    #[arg(long, value_parser = parse_shard)]
    shard: Option<ShardSpec>,
    /// Also search, per level, the smallest n_bits whose accuracy stays within
    /// --min-bits-tolerance of float (overflow statistics, then confirming evaluations)
    #[arg(long)]
    find_min_bits: bool,
    /// Tolerance of --find-min-bits, in percentage points of accuracy
    #[arg(long, default_value_t = crate::min_bits::DEFAULT_TOLERANCE_PP, requires = "find_min_bits")]
    min_bits_tolerance: f64,
    /// Decoder rows: compute the vocabulary logits at every position, as exported (default:
    /// only at the positions LAMBADA reads, the same numbers for a fraction of the lm_head)
    #[arg(long)]
    full_logits: bool,
    /// Pad every example to seq_len (default: to the smallest length bucket holding it,
    /// 16, 32, 48, 64, 96, ... then seq_len; also `"length_buckets": false` in the config)
    #[arg(long, conflicts_with = "length_buckets")]
    no_length_buckets: bool,
    /// Length buckets, comma-separated (seq_len is always the last), e.g. 16,32,64,96,128
    #[arg(long, value_delimiter = ',')]
    length_buckets: Option<Vec<usize>>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Per-SUF-node diagnostics for one row: headroom, overflows, error and cosine vs float
    Diagnose {
        #[arg(long)]
        config: PathBuf,
        /// Row id from the config
        #[arg(long)]
        row: String,
        /// Emulation level
        #[arg(long, default_value = "output", value_parser = ["output", "ring", "sigma"])]
        emulation: String,
        /// Ring size to diagnose (default: the row's n_bits)
        #[arg(long)]
        n_bits: Option<u32>,
        /// Number of examples (the first N of the dataset)
        #[arg(long, default_value_t = 8)]
        examples: usize,
        #[arg(long)]
        out_json: PathBuf,
        #[arg(long)]
        out_md: Option<PathBuf>,
        /// Error-by-layer plot
        #[arg(long)]
        out_svg: Option<PathBuf>,
        /// Where the graphs run: cpu or cuda (default: the config's default_device)
        #[arg(long)]
        device: Option<String>,
    },
    /// Combine shard reports (`--shard K/N` runs) into the report a single run gives
    Merge {
        /// Shard reports, one per K in 0..N
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long)]
        out_json: PathBuf,
        #[arg(long)]
        out_md: Option<PathBuf>,
    },
}

fn parse_shard(s: &str) -> Result<ShardSpec, String> {
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("shard \"{s}\" must look like K/N, e.g. 0/4"))?;
    let index: usize = k
        .trim()
        .parse()
        .map_err(|_| format!("shard index \"{k}\" is not a number"))?;
    let count: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("shard count \"{n}\" is not a number"))?;
    if count == 0 || index >= count {
        return Err(format!("shard {index}/{count}: need 0 <= K < N"));
    }
    Ok(ShardSpec { index, count })
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match dispatch(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("suf-run: error: {}", format!("{e:#}").replace('\n', " "));
            1
        }
    }
}

/// Every output path is checked before any evaluation: a typo costs nothing.
fn check_outputs(outputs: &[(&str, Option<&Path>)]) -> Result<()> {
    for (flag, path) in outputs {
        if let Some(p) = path {
            check_writable(p, flag)?;
        }
    }
    Ok(())
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Merge {
            inputs,
            out_json,
            out_md,
        }) => {
            check_outputs(&[
                ("--out-json", Some(&out_json)),
                ("--out-md", out_md.as_deref()),
            ])?;
            crate::merge::merge_files(&inputs, &out_json, out_md.as_deref())
        }
        Some(Command::Diagnose {
            config,
            row,
            emulation,
            n_bits,
            examples,
            out_json,
            out_md,
            out_svg,
            device,
        }) => {
            if examples == 0 {
                bail!("--examples must be at least 1");
            }
            check_outputs(&[
                ("--out-json", Some(&out_json)),
                ("--out-md", out_md.as_deref()),
                ("--out-svg", out_svg.as_deref()),
            ])?;
            let d = crate::diagnose::diagnose(&crate::diagnose::DiagnoseOptions {
                config,
                row,
                level: emulation,
                n_bits,
                examples,
                out_json,
                out_md,
                out_svg,
                device,
            })?;
            eprintln!(
                "diagnosed {} SUF nodes of {} ({}, n_bits={}) on {} examples: {} overflowed",
                d.nodes.len(),
                d.row,
                d.emulation,
                d.n_bits,
                d.examples,
                d.flagged.len()
            );
            Ok(())
        }
        None => evaluate(cli.run),
    }
}

fn evaluate(a: RunArgs) -> Result<()> {
    if a.max_examples == Some(0) {
        bail!("--max-examples must be at least 1 (0 would evaluate nothing)");
    }
    if a.emulation.len() > 1 && a.emulation.iter().any(|l| l == "none") {
        bail!("--emulation none runs the float graph only and cannot be combined with levels");
    }
    let single = match &a.model {
        Some(model) => {
            single::require_all(&[
                ("--tokenizer", a.tokenizer.is_some()),
                ("--task", a.task.is_some()),
                ("--data", a.data.is_some()),
                ("--n-bits", a.n_bits.is_some()),
            ])?;
            Some(SingleModel {
                model: model.clone(),
                tokenizer: a.tokenizer.clone().unwrap_or_default(),
                task: a.task.clone().unwrap_or_default(),
                data: a.data.clone().unwrap_or_default(),
                n_bits: a.n_bits.unwrap_or_default(),
                frac_bits: a.frac_bits,
                family: a.family.clone(),
                id: a.id.clone(),
                sigma_ref: a.sigma_ref.clone(),
                seq_len: 128,
                batch_size: a.batch_size.unwrap_or(run::DEFAULT_BATCH_SIZE),
            })
        }
        None => None,
    };
    let config = match (&a.config, &single) {
        (Some(c), _) => c.clone(),
        (None, Some(s)) => PathBuf::from(format!("--model {}", s.model.display())),
        (None, None) => bail!(
            "--config is required (e.g. --config configs/smoke.json), or --model with \
             --tokenizer, --task, --data and --n-bits for a single model"
        ),
    };
    let out_json = match (a.out_json, &single) {
        (Some(p), _) => p,
        (None, Some(s)) => Path::new("out").join(format!("{}.json", s.row_id()?)),
        (None, None) => bail!("--out-json is required"),
    };
    check_outputs(&[
        ("--out-json", Some(&out_json)),
        ("--out-md", a.out_md.as_deref()),
        ("--predictions-out", a.predictions_out.as_deref()),
    ])?;
    let opts = RunOptions {
        config,
        out_json,
        out_md: a.out_md,
        device: a.device,
        max_examples: a.max_examples,
        batch_size: a.batch_size,
        seed: a.seed,
        cache_dir: a.cache_dir,
        strict_sigma_match: a.strict_sigma_match,
        rows: a.rows,
        emulation: if a.emulation == ["none"] {
            vec![]
        } else {
            a.emulation
                .iter()
                .map(|l| crate::suf::parse_level(l))
                .collect::<Result<_>>()?
        },
        predictions_out: a.predictions_out,
        shard: a.shard,
        find_min_bits: a.find_min_bits.then_some(a.min_bits_tolerance),
        full_logits: a.full_logits,
        length_buckets: match (a.no_length_buckets, a.length_buckets) {
            (true, _) => Some(LengthBuckets::Enabled(false)),
            (false, Some(v)) => Some(LengthBuckets::Lengths(v)),
            (false, None) => None,
        },
    };
    match single {
        Some(s) => {
            let report = run::run_with(&s.to_config()?, &opts)?;
            // No config file to look at: the table goes to stdout.
            print!(
                "{}",
                crate::markdown::to_markdown(&report, &Default::default())
            );
            eprintln!("wrote {}", opts.out_json.display());
            Ok(())
        }
        None => run::run(&opts).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_syntax() {
        assert_eq!(
            parse_shard("1/4").unwrap(),
            ShardSpec { index: 1, count: 4 }
        );
        assert!(parse_shard("4/4").is_err());
        assert!(parse_shard("x/4").is_err());
        assert!(parse_shard("3").is_err());
    }
}
