//! What identifies a result beyond the config: the binary that computed it, every file a
//! model is made of (the `.onnx` and its external data), and SIGMA descriptions swapped in
//! at run time. Resume keys, the compiled-graph cache and merge all compare these.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};

use crate::hash;

/// SHA-256 of the running executable: a bug fix, a rebuild with other code, or another
/// checkout's binary all change it, whatever version number the package carries.
pub fn binary_sha256() -> String {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST
        .get_or_init(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| hash::sha256_file(&p).ok())
                .unwrap_or_else(|| "unknown".into())
        })
        .clone()
}

/// The files a model is made of, each with its SHA-256: the `.onnx` first, then the
/// external-data files its tensors name (a re-export with other weights changes those).
pub fn model_files(path: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    out.insert(
        file_label(path, path),
        hash::sha256_file(path).with_context(|| format!("hashing {}", path.display()))?,
    );
    for f in suf_compiler::onnx_io::external_data_files(path)? {
        let digest = hash::sha256_file(&f)
            .with_context(|| format!("external data of {}", path.display()))?;
        out.insert(file_label(path, &f), digest);
    }
    Ok(out)
}

/// A file's name relative to the model's folder (the identity must not depend on where
/// the checkout lives).
fn file_label(model: &Path, file: &Path) -> String {
    let dir = model.parent().unwrap_or(Path::new(""));
    file.strip_prefix(dir).unwrap_or(file).display().to_string()
}

/// The SUF descriptions a `SUF_APPROX_DIR` adds or swaps (file name -> SHA-256), empty when
/// the variable is unset: they change level `sigma` without changing the binary.
pub fn approx_override() -> Result<BTreeMap<String, String>> {
    let Some(dir) = std::env::var_os(suf_compiler::approx::APPROX_DIR_ENV) else {
        return Ok(BTreeMap::new());
    };
    let dir = Path::new(&dir);
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read SUF_APPROX_DIR {}", dir.display()))?;
    for e in entries {
        let p = e?.path();
        if p.is_file() {
            out.insert(
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                hash::sha256_file(&p)?,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_digest_is_a_real_digest() {
        let d = binary_sha256();
        assert_eq!(d.len(), 64, "{d}");
        assert_eq!(d, binary_sha256());
    }
}
