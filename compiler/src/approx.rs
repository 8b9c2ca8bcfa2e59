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
    let shipped = SHIPPED.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
    let d = match (&from_dir, shipped) {
        (Some(p), _) => parse(
            name,
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        )?,
        (None, Some(text)) => parse(name, text)?,
        // The rsqrt table is a pure function of the row width: any width gets one.
        (None, None) => match rsqrt_width(name) {
            Some(c) => suf_fixed::tables::rsqrt(c)
                .map_err(|e| anyhow!("cannot generate descriptor `{name}`: {e}"))?,
            None => {
                return Err(anyhow!(
                    "no SUF descriptor `{name}`: not shipped in compiler/approx and not in ${APPROX_DIR_ENV} \
                     (generate one with `cargo run -p suf-fixed --example gen_descriptors -- <dir> --rsqrt-c C`)"
                ))
            }
        },
    };
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

fn parse(name: &str, text: &str) -> Result<Descriptor> {
    Descriptor::from_json(text).map_err(|e| anyhow!("descriptor `{name}`: {e}"))
}

/// The row width C of a `sigma-rsqrt-<C>` name.
fn rsqrt_width(name: &str) -> Option<i64> {
    name.strip_prefix("sigma-rsqrt-")?
        .parse()
        .ok()
        .filter(|&c| c > 0)
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
    fn rsqrt_tables_of_unshipped_widths_are_generated() {
        for c in [512, 960] {
            let d = descriptor(&rsqrt_name(c)).unwrap();
            assert_eq!(*d, suf_fixed::tables::rsqrt(c as i64).unwrap());
        }
    }

    #[test]
    fn a_file_overrides_the_generated_table() {
        // A width no other test asks for: the process-wide cache and directory are then
        // this test's alone (other tests find no file of their names in it and are unaffected).
        let name = rsqrt_name(999);
        let mut d = suf_fixed::tables::rsqrt(999).unwrap();
        d.version += 1000;
        let dir = std::env::temp_dir().join(format!("suf-approx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.json")), d.to_json_pretty()).unwrap();
        std::env::set_var(APPROX_DIR_ENV, &dir);
        let loaded = descriptor(&name).unwrap();
        std::env::remove_var(APPROX_DIR_ENV);
        assert_eq!(*loaded, d);
        assert_ne!(*loaded, suf_fixed::tables::rsqrt(999).unwrap());
    }

    #[test]
    fn a_missing_descriptor_names_itself_and_the_generator() {
        let e = descriptor("sigma-nexp-17").unwrap_err().to_string();
        assert!(
            e.contains("sigma-nexp-17") && e.contains("gen_descriptors"),
            "{e}"
        );
    }
}
