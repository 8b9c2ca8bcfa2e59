//! `suf-bench`: latency of the float graph and of every SUF graph of one model, side by side
//! in one process on the same inputs (scripts/bench.sh adds onnxruntime and the ratios).
//!
//! Inputs are deterministic token ids, id[b, s] = (7919 * (b * seq + s) + 13) mod vocab, with
//! a full attention mask: scripts/bench_ort.py builds the very same tensors.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;

use crate::device::Device;
use crate::engine::{embedding_rows, Engine, TokenBatch};
use crate::{device_check, report, suf, sysinfo};

#[derive(Debug, Parser)]
#[command(
    name = "suf-bench",
    version = crate::sysinfo::VERSION,
    about = "Time the float and SUF graphs of one ONNX model in tract"
)]
pub struct BenchArgs {
    /// The ONNX model (original float graph)
    #[arg(long)]
    model: PathBuf,
    /// Ring size of the SUF graphs
    #[arg(long, default_value_t = 50)]
    n_bits: u32,
    #[arg(long, default_value_t = 12)]
    frac_bits: u32,
    /// Emulation levels to time next to float (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "output,ring")]
    levels: Vec<String>,
    /// Batch sizes (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs per graph and batch size (the median is reported)
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Label for the model in the report
    #[arg(long)]
    name: Option<String>,
    /// Decoders: compute the vocabulary logits at the last W positions only, as `suf-run`
    /// does for LAMBADA rows (default: at every position, as exported)
    #[arg(long)]
    logit_width: Option<usize>,
    /// Also time level `output` with one op kind at a time (where the SUF overhead goes)
    #[arg(long)]
    breakdown: bool,
    /// After timing, print each graph's time per tract op (one extra run per graph)
    #[arg(long)]
    profile: bool,
    /// Where the graphs run: cpu (tract) or cuda (tract-cuda on an NVIDIA GPU)
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Instead of timing: run one batch of every graph on the CPU and on the GPU and compare
    /// every SUF tensor bit for bit (exit 1 on a difference at levels ring/sigma or on a
    /// prediction that differs)
    #[arg(long)]
    compare_devices: bool,
    #[arg(long)]
    out_json: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct Timing {
    pub graph: String,
    pub batch: usize,
    pub seq_len: usize,
    pub prepare_s: f64,
    pub median_ms: f64,
    pub min_ms: f64,
    pub runs_ms: Vec<f64>,
    pub examples_per_s: f64,
    /// Median over rounds of (this graph's time / the float graph's time in the same round).
    pub over_float: Option<f64>,
    /// cuda plans: where the graph's nodes ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<suf_gpu::Placement>,
}

/// What every suf-bench report starts with: the binary, the machine, the model, the command.
#[derive(Debug, Serialize)]
pub struct BenchHeader {
    pub tool: String,
    pub git_commit: String,
    pub machine: String,
    pub model: String,
    pub name: String,
    pub n_bits: u32,
    pub frac_bits: u32,
    /// `--logit-width`: decoders computed the logits at this many positions (None: all).
    pub logit_width: Option<usize>,
    pub command: String,
}

impl BenchHeader {
    fn of(args: &BenchArgs) -> Self {
        BenchHeader {
            tool: format!("suf-bench {}", env!("CARGO_PKG_VERSION")),
            git_commit: sysinfo::git_commit(),
            machine: sysinfo::machine(),
            model: args.model.display().to_string(),
            name: args
                .name
                .clone()
                .unwrap_or_else(|| args.model.display().to_string()),
            n_bits: args.n_bits,
            frac_bits: args.frac_bits,
            logit_width: args.logit_width,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    #[serde(flatten)]
    pub header: BenchHeader,
    pub threads: usize,
    pub device: String,
    pub timings: Vec<Timing>,
}

#[derive(Debug, Serialize)]
struct CompareReport {
    #[serde(flatten)]
    header: BenchHeader,
    batch: usize,
    seq_len: usize,
    passed: bool,
    graphs: Vec<device_check::GraphComparison>,
}

/// `--compare-devices`: the first batch size, every graph, CPU against cuda.
fn compare_devices(
    args: &BenchArgs,
    framework: &tract_onnx::Onnx,
    graphs: &[(String, suf_compiler::ModelProto)],
    dir: Option<&std::path::Path>,
    vocab: i64,
) -> Result<()> {
    let batch = args.batch[0];
    let tb = inputs(batch, args.seq_len, vocab);
    let mut out = Vec::new();
    for (name, model) in graphs {
        let exact = name == "ring" || name == "sigma";
        let c = device_check::compare(name, framework, model, dir, &tb, exact)?;
        eprintln!(
            "{name:>8}: {} SUF tensors ({} elements), {} differ; logits {} (max |diff| {:.3e}); {} of {} predictions differ: {}",
            c.tensors,
            c.elements,
            c.differing.len(),
            if c.logits_equal { "bit-identical" } else { "differ" },
            c.logits_max_abs_diff,
            c.prediction_flips,
            c.rows,
            if c.passed() { "ok" } else { "FAILED" }
        );
        if c.ring_tensors_recomputed_on_cpu > 0 {
            eprintln!(
                "          {} tensors of level ring's functions recomputed on the CPU (an output the GPU could not certify)",
                c.ring_tensors_recomputed_on_cpu
            );
        }
        for d in c.differing.iter().take(5) {
            eprintln!("          {d}");
        }
        out.push(c);
    }
    let passed = out.iter().all(|c| c.passed());
    let report = CompareReport {
        header: BenchHeader::of(args),
        batch,
        seq_len: args.seq_len,
        passed,
        graphs: out,
    };
    report::write_atomic(&args.out_json, &serde_json::to_vec_pretty(&report)?)?;
    if !passed {
        bail!(
            "the CPU and cuda results differ (see {})",
            args.out_json.display()
        );
    }
    Ok(())
}

pub fn main() -> i32 {
    let args = match BenchArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("suf-bench: error: {}", format!("{e:#}").replace('\n', " "));
            1
        }
    }
}

fn inputs(batch: usize, seq_len: usize, vocab: i64) -> TokenBatch {
    let n = batch * seq_len;
    TokenBatch {
        batch,
        seq_len,
        input_ids: (0..n as i64).map(|i| (7919 * i + 13) % vocab).collect(),
        attention_mask: vec![1; n],
        token_type_ids: vec![0; n],
        prompt_lens: vec![seq_len; batch],
    }
}

fn median(xs: &[f64]) -> f64 {
    median_of(xs.to_vec())
}

fn median_of(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn run(args: &BenchArgs) -> Result<()> {
    if args.iters == 0 || args.batch.contains(&0) {
        bail!("--iters and every --batch must be > 0");
    }
    for level in &args.levels {
        suf::parse_level(level)?;
    }
    let device: Device = args.device.parse()?;
    device.check()?;
    let proto = suf::load_model(&args.model)?;
    // Token ids must come from the model's own vocabulary; a guess could index past it.
    let vocab = embedding_rows(&proto).with_context(|| {
        format!(
            "{}: no token embedding (a Gather of input_ids from an initializer) tells the vocabulary size",
            args.model.display()
        )
    })?;
    let proto = match args.logit_width {
        Some(w) => {
            let mut proto = proto;
            if let Some(g) = proto.graph.as_mut() {
                suf_compiler::normalize::normalize(g);
            }
            let r = suf_compiler::logit_positions::restrict(proto, w)
                .context("--logit-width: computing logits only at the last positions")?;
            eprintln!(
                "logits at the last {w} of {} positions ({} projects only those)",
                args.seq_len, r.projection
            );
            r.model
        }
        None => proto,
    };
    let framework = suf::framework();
    let dir = args.model.parent();
    let mut graphs = vec![("float".to_string(), suf::normalized(&proto))];
    for level in &args.levels {
        let t0 = Instant::now();
        let m = suf::compile(
            &proto,
            args.n_bits,
            args.frac_bits,
            suf::parse_level(level)?,
        )
        .with_context(|| format!("compiling for {level}"))?;
        eprintln!("compiled {level} in {:.1} s", t0.elapsed().as_secs_f64());
        graphs.push((level.clone(), m));
    }
    if args.compare_devices {
        return compare_devices(args, &framework, &graphs, dir, vocab);
    }
    if args.breakdown {
        let fixed = suf_compiler::FixedPoint::new(args.n_bits, args.frac_bits)?;
        let full = suf_compiler::compile(&proto, &suf_compiler::CompileOptions::new(fixed))?;
        for kind in full.summary.inserted.keys() {
            let mut opts = suf_compiler::CompileOptions::new(fixed);
            opts.only = Some([*kind].into_iter().collect());
            let m = suf_compiler::compile(&proto, &opts)?.model;
            graphs.push((format!("output[{kind}]"), m));
        }
    }
    // Interleaved rounds: every round runs each graph once, so drift in the machine's speed
    // (frequency, neighbours) hits all graphs alike; ratios are medians of per-round ratios.
    let mut timings = Vec::new();
    for &batch in &args.batch {
        let tb = inputs(batch, args.seq_len, vocab);
        let mut engines = Vec::with_capacity(graphs.len());
        for (name, model) in &graphs {
            let t0 = Instant::now();
            let engine = Engine::new_on(device, &framework, model, dir, batch, args.seq_len)
                .with_context(|| format!("{name} graph"))?;
            if let Some(p) = &engine.placement {
                eprintln!("{name} graph on cuda: {}", p.summary());
                if let Some(w) = p.warning() {
                    eprintln!("{name} graph: {w}");
                }
            }
            engines.push((name, engine, t0.elapsed().as_secs_f64()));
        }
        let mut runs = vec![Vec::with_capacity(args.iters); engines.len()];
        for round in 0..args.warmup + args.iters {
            for (k, (_, engine, _)) in engines.iter().enumerate() {
                let t = Instant::now();
                engine.run(&tb)?;
                if round >= args.warmup {
                    runs[k].push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        if args.profile {
            for (name, engine, _) in &engines {
                let per_op = engine.profile(&tb)?;
                let total: f64 = per_op.iter().map(|(_, d)| d.as_secs_f64()).sum();
                eprintln!("profile {name} batch {batch}: {:.1} ms in ops", total * 1e3);
                for (op, d) in per_op.iter().take(12) {
                    eprintln!(
                        "  {:>8.1} ms {:>5.1}%  {op}",
                        d.as_secs_f64() * 1e3,
                        d.as_secs_f64() / total * 100.0
                    );
                }
            }
        }
        for (k, (name, engine, prepare_s)) in engines.iter().enumerate() {
            let median = median(&runs[k]);
            let over_float = (k > 0).then(|| {
                let ratios: Vec<f64> = runs[k].iter().zip(&runs[0]).map(|(a, f)| a / f).collect();
                median_of(ratios)
            });
            eprintln!(
                "{name:>16} batch {batch}: median {median:.1} ms{}",
                over_float
                    .map(|r| format!(", {r:.2}x float"))
                    .unwrap_or_default()
            );
            timings.push(Timing {
                graph: name.to_string(),
                batch,
                seq_len: args.seq_len,
                prepare_s: *prepare_s,
                median_ms: median,
                min_ms: runs[k].iter().cloned().fold(f64::INFINITY, f64::min),
                runs_ms: runs[k].clone(),
                examples_per_s: batch as f64 / (median / 1e3),
                over_float,
                placement: engine.placement.clone(),
            });
        }
    }
    let report = BenchReport {
        header: BenchHeader::of(args),
        threads: 1,
        device: device.to_string(),
        timings,
    };
    report::write_atomic(&args.out_json, &serde_json::to_vec_pretty(&report)?)?;
    Ok(())
}
