//! Writes SIGMA's approximations as descriptor files (one pretty JSON file per table).
//!
//! ```text
//! cargo run -p suf-fixed --example gen_descriptors -- <out_dir> [--rsqrt-c C ...]
//! ```
//!
//! Without `--rsqrt-c` the rsqrt tables are the default widths (tables::DEFAULT_RSQRT_C).
//! Each file is written to a temporary name and renamed, so a reader never sees half a file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use suf_fixed::descriptor::Descriptor;
use suf_fixed::tables;

fn usage() -> String {
    "usage: gen_descriptors <out_dir> [--rsqrt-c C ...]".to_string()
}

fn parse_args(args: &[String]) -> Result<(PathBuf, Vec<i64>), String> {
    let mut out_dir = None;
    let mut widths = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--rsqrt-c" {
            let v = iter
                .next()
                .ok_or_else(|| format!("--rsqrt-c needs a value\n{}", usage()))?;
            let c = v
                .parse::<i64>()
                .map_err(|e| format!("--rsqrt-c `{v}`: {e}"))?;
            widths.push(c);
        } else if arg.starts_with("--") {
            return Err(format!("unknown option `{arg}`\n{}", usage()));
        } else if out_dir.is_none() {
            out_dir = Some(PathBuf::from(arg));
        } else {
            return Err(format!("unexpected argument `{arg}`\n{}", usage()));
        }
    }
    let out_dir = out_dir.ok_or_else(usage)?;
    if widths.is_empty() {
        widths = tables::DEFAULT_RSQRT_C.to_vec();
    }
    Ok((out_dir, widths))
}

fn write_atomic(dir: &Path, d: &Descriptor) -> Result<PathBuf, String> {
    let path = dir.join(format!("{}.json", d.name));
    let tmp = dir.join(format!(".{}.json.tmp", d.name));
    std::fs::write(&tmp, d.to_json_pretty()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn run(args: &[String]) -> Result<(), String> {
    let (out_dir, widths) = parse_args(args)?;
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let mut all = vec![
        tables::gelu(),
        tables::silu(),
        tables::nexp_hi(),
        tables::nexp_lo(),
        tables::reciprocal(tables::DEFAULT_RECIP_BITS).map_err(|e| e.to_string())?,
    ];
    for c in widths {
        all.push(tables::rsqrt(c).map_err(|e| e.to_string())?);
    }
    for d in &all {
        let path = write_atomic(&out_dir, d)?;
        println!(
            "{}  ({} pieces, {:?} error <= {})",
            path.display(),
            d.cuts.len(),
            d.error.metric,
            d.error.max
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_descriptors: {e}");
            ExitCode::FAILURE
        }
    }
}
