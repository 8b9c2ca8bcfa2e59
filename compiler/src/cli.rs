//! `suf-compile`: rewrite an ONNX model with fixed-point SUF nodes.

use crate::dump::{dump, DumpFormat};
use crate::onnx_io::{load_model, save_model, write_atomic};
use crate::pass::{compile, CompileOptions, Emulation};
use crate::patterns::OpKind;
use anyhow::{Context, Result};
use clap::Parser;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use suf_fixed::{FixedPoint, Rounding, DEFAULT_FRAC_BITS};

#[derive(Parser, Debug)]
#[command(
    name = "suf-compile",
    version,
    about = "Rewrite an ONNX transformer with fixed-point SUF nodes after every MatMul/Gemm, \
             LayerNorm, RMSNorm, Softmax, GELU, SiLU, Add and embedding Gather.",
    after_help = "Example:\n  suf-compile bert.onnx --n-bits 37 -o bert.suf.onnx --dump bert.suf.txt"
)]
struct Args {
    /// The ONNX model to rewrite (external data files beside it are read too).
    model: PathBuf,
    /// Ring size n: values live in Z_(2^n), frac_bits < n <= 64.
    #[arg(long)]
    n_bits: u32,
    /// Fractional bits f.
    #[arg(long, default_value_t = DEFAULT_FRAC_BITS)]
    frac_bits: u32,
    /// Encoding rule: round (to nearest, ties to even) or trunc (toward zero, SIGMA's cast).
    #[arg(long, default_value = "round", value_parser = parse_rounding)]
    rounding: Rounding,
    /// Emulation level (SPEC section 2).
    #[arg(long, default_value = "output", value_parser = parse_emulation)]
    emulation: Emulation,
    /// Only insert SUF nodes after these op kinds (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    only: Option<Vec<OpKind>>,
    /// Insert no SUF nodes after these op kinds (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    skip: Vec<OpKind>,
    /// Emit standard ONNX ops (float64 arithmetic) instead of custom SUF nodes, so that any
    /// ONNX runtime can run the model; exact for n_bits <= 53.
    #[arg(long)]
    lower: bool,
    /// Where to write the rewritten model.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Also write a dump of the rewritten graph.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Dump format: text, dot or json.
    #[arg(long, default_value = "text", value_parser = parse_format)]
    dump_format: DumpFormat,
}

fn parse_rounding(s: &str) -> Result<Rounding, String> {
    match s {
        "floor" => Err("--rounding floor is not an encoding rule (use round or trunc)".into()),
        _ => s.parse().map_err(|e: suf_fixed::FixedError| e.to_string()),
    }
}
fn parse_emulation(s: &str) -> Result<Emulation, String> {
    s.parse()
}
fn parse_kind(s: &str) -> Result<OpKind, String> {
    s.parse()
}
fn parse_format(s: &str) -> Result<DumpFormat, String> {
    s.parse()
}

pub fn main() -> i32 {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("suf-compile: error: {e:#}");
            1
        }
    }
}

fn run(args: Args) -> Result<()> {
    let fixed = FixedPoint::new(args.n_bits, args.frac_bits)?;
    let model = load_model(&args.model)?;
    let opts = CompileOptions {
        fixed,
        rounding: args.rounding,
        emulation: args.emulation,
        only: args.only.map(|v| v.into_iter().collect()),
        skip: args.skip.into_iter().collect::<BTreeSet<_>>(),
        lower: args.lower,
    };
    let compiled =
        compile(&model, &opts).with_context(|| format!("compiling {}", args.model.display()))?;
    if let Some(path) = &args.dump {
        let text = dump(&compiled.model, Some(&compiled.summary), args.dump_format)?;
        write_atomic(path, text.as_bytes())?;
    }
    save_model(&compiled.model, &args.output)?;
    // A closed stdout (`| head`) must not turn a finished compilation into a panic.
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", compiled.summary);
    let _ = writeln!(out, "wrote {}", args.output.display());
    Ok(())
}
