//! `suf-run --model M.onnx --tokenizer T --task glue/sst2 --data FILE --n-bits 37`: one model
//! to a result without writing a config. The flags become a one-row configuration that goes
//! through the same parser and validation as a config file, so a row given either way is
//! evaluated by the same code with the same numbers.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use crate::config::{self, LoadedConfig, Task};

/// One SIGMA Table 4 row: (model, task, train size, val size, PyTorch acc, SIGMA acc).
type Table4Row = (&'static str, &'static str, Option<u64>, u64, f64, f64);

/// SIGMA Table 4 rows a single-model run can be compared with (SPEC section 4).
const TABLE4: [Table4Row; 11] = [
    ("bert-tiny", "glue/sst2", Some(67349), 872, 0.8245, 0.8257),
    ("bert-tiny", "glue/mrpc", Some(3668), 408, 0.7107, 0.7034),
    ("bert-tiny", "glue/qnli", Some(104743), 5463, 0.8142, 0.8193),
    ("bert-base", "glue/sst2", Some(67349), 872, 0.9255, 0.9255),
    ("bert-base", "glue/mrpc", Some(3668), 408, 0.8431, 0.8725),
    ("bert-base", "glue/qnli", Some(104743), 5463, 0.9160, 0.9163),
    ("bert-large", "glue/sst2", Some(67349), 872, 0.9358, 0.9335),
    ("bert-large", "glue/mrpc", Some(3668), 408, 0.8799, 0.8848),
    (
        "bert-large",
        "glue/qnli",
        Some(104743),
        5463,
        0.9223,
        0.9226,
    ),
    ("gpt2", "lambada_openai", None, 5153, 0.3246, 0.3328),
    ("gpt-neo-1.3b", "lambada_openai", None, 5153, 0.5746, 0.5781),
];

/// The single-model flags, as the command line gives them.
#[derive(Debug, Clone)]
pub struct SingleModel {
    pub model: PathBuf,
    pub tokenizer: PathBuf,
    pub task: String,
    pub data: PathBuf,
    pub n_bits: u32,
    pub frac_bits: u32,
    pub family: Option<String>,
    pub id: Option<String>,
    /// Which Table 4 model's numbers fill the SIGMA columns (default: the smallest for the task).
    pub sigma_ref: Option<String>,
    pub seq_len: usize,
    pub batch_size: usize,
}

impl SingleModel {
    /// The row id: `--id`, else the model file's stem.
    pub fn row_id(&self) -> Result<String> {
        if let Some(id) = &self.id {
            return Ok(id.clone());
        }
        self.model
            .file_stem()
            .map(|s| s.to_string_lossy().replace(',', "_"))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("--model {} has no file name", self.model.display()))
    }

    /// The one-row configuration, parsed and validated like a config file.
    pub fn to_config(&self) -> Result<LoadedConfig> {
        let task: Task = serde_json::from_value(json!(self.task)).map_err(|_| {
            anyhow!(
                "unknown --task \"{}\" (expected glue/sst2, glue/mrpc, glue/qnli or lambada_openai)",
                self.task
            )
        })?;
        let family = self
            .family
            .clone()
            .unwrap_or_else(|| task.family().as_str().to_string());
        let (ref_name, _, train, val, pytorch, sigma) = self.table4_row(task)?;
        let path = |p: &PathBuf| p.display().to_string();
        let value = json!({
            "global": {"seed": 0, "seq_len": self.seq_len, "frac_bits": self.frac_bits,
                       "default_device": "cpu", "num_workers": 0, "batch_size": self.batch_size,
                       "on_missing_model": "error"},
            "rows": [{
                "id": self.row_id()?,
                "family": family,
                "task": task.as_str(),
                "model": path(&self.model),
                "tokenizer": path(&self.tokenizer),
                "data": path(&self.data),
                "n_bits": self.n_bits,
                "sigma_ref": {"train_size": train, "val_size": val, "pytorch_acc": pytorch,
                              "sigma_acc": sigma},
                "notes": format!("single-model run; SIGMA columns: Table 4's {ref_name} {} row, for orientation", task.display_name()),
            }]
        });
        let bytes = serde_json::to_vec_pretty(&value)?;
        let config = config::parse(&bytes).map_err(|e| anyhow!("{e:#}"))?;
        let base_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Ok(LoadedConfig {
            config,
            base_dir,
            sha256: crate::hash::sha256_hex(&bytes),
        })
    }

    fn table4_row(&self, task: Task) -> Result<Table4Row> {
        let wanted = self.sigma_ref.as_deref();
        let candidates: Vec<_> = TABLE4.iter().filter(|r| r.1 == task.as_str()).collect();
        match wanted {
            None => Ok(*candidates[0]),
            Some(name) => candidates
                .iter()
                .find(|r| r.0 == name)
                .map(|r| **r)
                .ok_or_else(|| {
                    let names: Vec<&str> = candidates.iter().map(|r| r.0).collect();
                    anyhow!(
                        "--sigma-ref {name}: Table 4 has no such row for {} (it has: {})",
                        task.as_str(),
                        names.join(", ")
                    )
                }),
        }
    }
}

/// The flags a single-model run needs, when one of them is given.
pub fn require_all(given: &[(&str, bool)]) -> Result<()> {
    let missing: Vec<&str> = given.iter().filter(|(_, g)| !g).map(|(f, _)| *f).collect();
    if !missing.is_empty() {
        bail!(
            "a single-model run (--model) also needs {}",
            missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(task: &str) -> SingleModel {
        SingleModel {
            model: "models/m.onnx".into(),
            tokenizer: "t.json".into(),
            task: task.into(),
            data: "d.tsv".into(),
            n_bits: 37,
            frac_bits: 12,
            family: None,
            id: None,
            sigma_ref: None,
            seq_len: 128,
            batch_size: 8,
        }
    }

    #[test]
    fn builds_one_validated_row_with_the_family_of_the_task() {
        let c = single("lambada_openai").to_config().unwrap();
        let row = &c.config.rows[0];
        assert_eq!((row.id.as_str(), row.family.as_str()), ("m", "gpt_lm"));
        assert_eq!(row.sigma_ref.pytorch_acc, 0.3246);
        let err = single("glue/cola").to_config().unwrap_err().to_string();
        assert!(err.contains("glue/cola"), "{err}");
        let mut s = single("glue/sst2");
        s.family = Some("gpt_lm".into());
        let err = format!("{:#}", s.to_config().unwrap_err());
        assert!(err.contains("does not fit"), "{err}");
        s.family = None;
        s.sigma_ref = Some("gpt2".into());
        let err = s.to_config().unwrap_err().to_string();
        assert!(err.contains("bert-tiny, bert-base, bert-large"), "{err}");
    }
}
