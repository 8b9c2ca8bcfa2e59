//! `suf-compile`: rewrite an ONNX model with fixed-point SUF nodes.

use crate::dump::{dump, DumpFormat};
use crate::onnx_io::{load_model, save_model, write_atomic};
use crate::outpath::check_writable;
use crate::pass::{compile, CompileOptions, Emulation};
use crate::patterns::OpKind;
use crate::rewritten;
use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
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
    /// Default: round; trunc at --emulation sigma, whose algorithms are defined with it.
    #[arg(long, value_enum)]
    rounding: Option<RoundingArg>,
    /// Emulation level (SPEC section 2): output (ops in float, outputs encoded), ring
    /// (ring-exact products), sigma (ring + SIGMA's own nonlinear algorithms).
    #[arg(long, value_enum, default_value_t = EmulationArg::Output)]
    emulation: EmulationArg,
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
    /// Dump format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    dump_format: FormatArg,
}

/// Encoding rules a user may pick (floor is a truncation rule, not an encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RoundingArg {
    Round,
    Trunc,
}

impl From<RoundingArg> for Rounding {
    fn from(r: RoundingArg) -> Self {
        match r {
            RoundingArg::Round => Rounding::Round,
            RoundingArg::Trunc => Rounding::Trunc,
        }
    }
}

/// Mirrors `Emulation` so that `--help` lists the levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EmulationArg {
    Output,
    Ring,
    Sigma,
}

impl From<EmulationArg> for Emulation {
    fn from(e: EmulationArg) -> Self {
        match e {
            EmulationArg::Output => Emulation::Output,
            EmulationArg::Ring => Emulation::Ring,
            EmulationArg::Sigma => Emulation::Sigma,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    Text,
    Dot,
    Json,
}

impl From<FormatArg> for DumpFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Text => DumpFormat::Text,
            FormatArg::Dot => DumpFormat::Dot,
            FormatArg::Json => DumpFormat::Json,
        }
    }
}

fn parse_kind(s: &str) -> Result<OpKind, String> {
    s.parse()
}

/// The encoding rule to compile with. Level sigma is SIGMA's arithmetic, which truncates;
/// asking for round there would be silently overridden, so it is an error instead.
fn rounding_for(emulation: Emulation, asked: Option<RoundingArg>) -> Result<Rounding> {
    match (emulation, asked) {
        (Emulation::Sigma, Some(RoundingArg::Round)) => bail!(
            "--rounding round cannot be used with --emulation sigma: SIGMA's algorithms encode \
             by truncation (leave --rounding out, or use --emulation output|ring)"
        ),
        (Emulation::Sigma, _) => Ok(Rounding::Trunc),
        (_, asked) => Ok(asked.map_or(Rounding::Round, Rounding::from)),
    }
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
    let emulation = Emulation::from(args.emulation);
    let rounding = rounding_for(emulation, args.rounding)?;
    check_writable(&args.output, "-o")?;
    if let Some(d) = &args.dump {
        check_writable(d, "--dump")?;
    }
    let model = load_model(&args.model)?;
    rewritten::refuse(&model, &args.model.display().to_string())?;
    let opts = CompileOptions {
        fixed,
        rounding,
        emulation,
        only: args.only.map(|v| v.into_iter().collect()),
        skip: args.skip.into_iter().collect::<BTreeSet<_>>(),
        lower: args.lower,
    };
    let mut compiled =
        compile(&model, &opts).with_context(|| format!("compiling {}", args.model.display()))?;
    rewritten::mark(
        &mut compiled.model,
        &format!(
            "n_bits={} frac_bits={} rounding={} emulation={} lowered={}",
            args.n_bits, args.frac_bits, rounding, emulation, args.lower
        ),
    );
    if let Some(path) = &args.dump {
        let text = dump(
            &compiled.model,
            Some(&compiled.summary),
            args.dump_format.into(),
        )?;
        write_atomic(path, text.as_bytes())?;
    }
    save_model(&compiled.model, &args.output)?;
    // A closed stdout (`| head`) must not turn a finished compilation into a panic.
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", compiled.summary);
    let _ = writeln!(out, "wrote {}", args.output.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_truncates_and_refuses_an_explicit_round() {
        assert_eq!(
            rounding_for(Emulation::Sigma, None).unwrap(),
            Rounding::Trunc
        );
        assert_eq!(
            rounding_for(Emulation::Sigma, Some(RoundingArg::Trunc)).unwrap(),
            Rounding::Trunc
        );
        assert!(rounding_for(Emulation::Sigma, Some(RoundingArg::Round)).is_err());
        assert_eq!(
            rounding_for(Emulation::Ring, None).unwrap(),
            Rounding::Round
        );
    }
}
