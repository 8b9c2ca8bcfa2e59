//! `--cache-dir`: compiled SUF graphs kept across runs. An entry is named by the SHA-256 of
//! everything the rewrite depends on (the binary, every file of the source model, the SUF
//! descriptions swapped in by `SUF_APPROX_DIR`, the logit-positions rewrite applied before
//! the SUF pass, n, f and the level), so a graph compiled by other code, from other weights
//! or from another rewrite of the source is never found, only recompiled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use suf_compiler::Emulation;
use tract_onnx::pb::ModelProto;

use crate::{hash, provenance};

pub struct GraphCache {
    dir: PathBuf,
    /// Source model files and the SUF descriptions in use: fixed for a row.
    model_files: BTreeMap<String, String>,
    approx: BTreeMap<String, String>,
    /// W of `suf_compiler::logit_positions` when the source was rewritten (None: full logits).
    logit_width: Option<usize>,
}

impl GraphCache {
    pub fn new(
        dir: &Path,
        model_files: BTreeMap<String, String>,
        logit_width: Option<usize>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create --cache-dir {}", dir.display()))?;
        Ok(GraphCache {
            dir: dir.to_path_buf(),
            model_files,
            approx: provenance::approx_override()?,
            logit_width,
        })
    }

    /// The entry name of one rewrite.
    pub fn key(&self, n_bits: u32, frac_bits: u32, level: Emulation) -> String {
        let key = serde_json::json!({
            "binary_sha256": provenance::binary_sha256(),
            "model_files": self.model_files,
            "approx_override": self.approx,
            "logit_width": self.logit_width,
            "n_bits": n_bits,
            "frac_bits": frac_bits,
            "level": level.as_str(),
        });
        hash::sha256_hex(key.to_string().as_bytes())
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.suf.onnx"))
    }

    /// The cached rewrite, or `compile`'s result stored for next time; says which it was.
    pub fn get_or_compile(
        &self,
        n_bits: u32,
        frac_bits: u32,
        level: Emulation,
        compile: impl FnOnce() -> Result<ModelProto>,
    ) -> Result<(ModelProto, bool)> {
        let path = self.path(&self.key(n_bits, frac_bits, level));
        if path.is_file() {
            let model = suf_compiler::load_model(&path)
                .with_context(|| format!("cached graph {}", path.display()))?;
            return Ok((model, true));
        }
        let model = compile()?;
        // Written atomically (external data first for large graphs), so a concurrent run
        // sharing the folder sees a whole entry or none.
        suf_compiler::save_model(&model, &path)
            .with_context(|| format!("cannot store compiled graph in {}", path.display()))?;
        Ok((model, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &Path, weights: &str) -> GraphCache {
        let files = [("m.onnx".to_string(), weights.to_string())].into();
        GraphCache::new(dir, files, None).unwrap()
    }

    #[test]
    fn every_input_of_the_rewrite_is_in_the_key() {
        let d = tempfile::tempdir().unwrap();
        let a = cache(d.path(), "aaaa");
        let base = a.key(37, 12, Emulation::Output);
        assert_eq!(base, a.key(37, 12, Emulation::Output));
        assert_ne!(base, a.key(38, 12, Emulation::Output));
        assert_ne!(base, a.key(37, 11, Emulation::Output));
        assert_ne!(base, a.key(37, 12, Emulation::Ring));
        assert_ne!(base, cache(d.path(), "bbbb").key(37, 12, Emulation::Output));
        let files: BTreeMap<_, _> = [("m.onnx".to_string(), "aaaa".to_string())].into();
        let window = |w| GraphCache::new(d.path(), files.clone(), w).unwrap();
        assert_ne!(base, window(Some(1)).key(37, 12, Emulation::Output));
        assert_ne!(
            window(Some(1)).key(37, 12, Emulation::Output),
            window(Some(2)).key(37, 12, Emulation::Output)
        );
    }

    #[test]
    fn a_stored_graph_is_reused_and_a_new_key_recompiles() {
        let d = tempfile::tempdir().unwrap();
        let c = cache(d.path(), "aaaa");
        let model = crate::synthetic::bert_classifier(50, 4, 3);
        let (_, hit) = c
            .get_or_compile(37, 12, Emulation::Output, || Ok(model.clone()))
            .unwrap();
        assert!(!hit);
        let (again, hit) = c
            .get_or_compile(37, 12, Emulation::Output, || {
                panic!("must come from the cache")
            })
            .unwrap();
        assert!(hit);
        assert_eq!(again, model);
        let (_, hit) = c
            .get_or_compile(40, 12, Emulation::Output, || Ok(model.clone()))
            .unwrap();
        assert!(!hit, "another n is another entry");
    }
}
