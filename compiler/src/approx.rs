//! The SUF operator descriptions the `sigma` level evaluates (compiler/approx/*.json).
//!
//! The shipped files are compiled into the binary; a directory named by `SUF_APPROX_DIR`
//! adds files or replaces shipped ones by name, so a new approximation needs no code change.

use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use suf_fixed::descriptor::Descriptor;

/// Environment variable naming a directory of extra or replacement descriptor files.
pub const APPROX_DIR_ENV: &str = "SUF_APPROX_DIR";

const SHIPPED: [(&str, &str); 14] = [
    ("sigma-gelu", include_str!("../approx/sigma-gelu.json")),
    ("sigma-silu", include_str!("../approx/sigma-silu.json")),
    (
        "sigma-nexp-hi",
        include_str!("../approx/sigma-nexp-hi.json"),
    ),
    (
        "sigma-nexp-lo",
        include_str!("../approx/sigma-nexp-lo.json"),
    ),
    (
        "sigma-reciprocal-13",
        include_str!("../approx/sigma-reciprocal-13.json"),
    ),
    (
        "sigma-rsqrt-8",
        include_str!("../approx/sigma-rsqrt-8.json"),
    ),
    (
        "sigma-rsqrt-32",
        include_str!("../approx/sigma-rsqrt-32.json"),
    ),
    (
        "sigma-rsqrt-128",
        include_str!("../approx/sigma-rsqrt-128.json"),
    ),
    (
        "sigma-rsqrt-256",
        include_str!("../approx/sigma-rsqrt-256.json"),
    ),
    (
        "sigma-rsqrt-384",
        include_str!("../approx/sigma-rsqrt-384.json"),
    ),
    (
        "sigma-rsqrt-576",
        include_str!("../approx/sigma-rsqrt-576.json"),
    ),
    (
        "sigma-rsqrt-768",
        include_str!("../approx/sigma-rsqrt-768.json"),
    ),
    (
        "sigma-rsqrt-1024",
        include_str!("../approx/sigma-rsqrt-1024.json"),
    ),
    (
        "sigma-rsqrt-2048",
        include_str!("../approx/sigma-rsqrt-2048.json"),
    ),
];

static CACHE: OnceLock<Mutex<HashMap<String, Arc<Descriptor>>>> = OnceLock::new();

/// The descriptor called `name` (file `<name>.json`): the override directory first, then
/// the shipped files. Parsed once per process.
pub fn descriptor(name: &str) -> Result<Arc<Descriptor>> {
    let cache = CACHE.get_or_init(Default::default);
    if let Some(d) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
        return Ok(d.clone());
    }
    let from_dir = std::env::var_os(APPROX_DIR_ENV)
        .map(|dir| std::path::PathBuf::from(dir).join(format!("{name}.json")))
        .filter(|p| p.is_file());
    let text = match &from_dir {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        None => SHIPPED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.to_string())
            .ok_or_else(|| {
                anyhow!(
                    "no SUF descriptor `{name}`: not shipped in compiler/approx and not in ${APPROX_DIR_ENV} \
                     (generate one with `cargo run -p suf-fixed --example gen_descriptors -- <dir> --rsqrt-c C`)"
                )
            })?,
    };
    let d = Descriptor::from_json(&text).map_err(|e| anyhow!("descriptor `{name}`: {e}"))?;
    if d.name != name {
        return Err(anyhow!(
            "descriptor file `{name}.json` declares name `{}`",
            d.name
        ));
    }
    let d = Arc::new(d);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), d.clone());
    Ok(d)
}

/// The rsqrt table of SIGMA's LayerNorm for rows of `c` elements.
pub fn rsqrt_name(c: usize) -> String {
    format!("sigma-rsqrt-{c}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_descriptor_loads_under_its_name() {
        for (name, _) in SHIPPED {
            let d = descriptor(name).unwrap();
            assert_eq!(d.name, name);
        }
    }

    #[test]
    fn a_missing_descriptor_names_itself_and_the_generator() {
        let e = descriptor("sigma-rsqrt-333").unwrap_err().to_string();
        assert!(
            e.contains("sigma-rsqrt-333") && e.contains("gen_descriptors"),
            "{e}"
        );
    }
}
