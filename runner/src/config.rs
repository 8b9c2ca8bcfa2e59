//! The run configuration (SPEC section 5): strict parsing, so a typo is an error naming the row and key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Which evaluation protocol a row uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    #[serde(rename = "bert_seqcls")]
    BertSeqCls,
    #[serde(rename = "gpt_lm")]
    GptLm,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::BertSeqCls => "bert_seqcls",
            Family::GptLm => "gpt_lm",
        }
    }
}

/// The dataset a row evaluates; decides the file format and the label convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    #[serde(rename = "glue/sst2")]
    Sst2,
    #[serde(rename = "glue/mrpc")]
    Mrpc,
    #[serde(rename = "glue/qnli")]
    Qnli,
    #[serde(rename = "lambada_openai")]
    LambadaOpenai,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Sst2 => "glue/sst2",
            Task::Mrpc => "glue/mrpc",
            Task::Qnli => "glue/qnli",
            Task::LambadaOpenai => "lambada_openai",
        }
    }

    /// Short dataset name for the Markdown table.
    pub fn display_name(self) -> &'static str {
        match self {
            Task::Sst2 => "SST-2",
            Task::Mrpc => "MRPC",
            Task::Qnli => "QNLI",
            Task::LambadaOpenai => "LAMBADA",
        }
    }

    pub fn family(self) -> Family {
        match self {
            Task::LambadaOpenai => Family::GptLm,
            _ => Family::BertSeqCls,
        }
    }
}

/// What a full-table run does with a row whose model file is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingModel {
    /// Report the row as skipped, with the reason (Table 4: most checkpoints need an export first).
    #[default]
    Skip,
    /// Fail the run (smoke configurations: their models ship with the repo).
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    pub seed: u64,
    pub seq_len: usize,
    pub frac_bits: u32,
    pub default_device: String,
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Worker threads over batches; 0 = one per core.
    #[serde(default)]
    pub num_workers: usize,
    #[serde(default)]
    pub batch_size: Option<usize>,
    #[serde(default)]
    pub on_missing_model: MissingModel,
    /// Evaluate only the first N examples of every row (quick configs); `--max-examples` overrides.
    #[serde(default)]
    pub max_examples: Option<usize>,
    /// Decoder rows compute the logits at every position, as exported (`--full-logits`);
    /// default false: only where the protocol reads them.
    #[serde(default)]
    pub full_logits: bool,
    /// Pad each example to the smallest length bucket holding it (`buckets.rs`): true (the
    /// default lengths), false (every example to seq_len, `--no-length-buckets`) or the
    /// lengths, e.g. [16, 32, 64, 128].
    #[serde(default)]
    pub length_buckets: crate::buckets::LengthBuckets,
}

/// SIGMA's reported numbers for the row (accuracies as fractions in [0, 1]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigmaRef {
    pub train_size: Option<u64>,
    pub val_size: u64,
    pub pytorch_acc: f64,
    pub sigma_acc: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub id: String,
    /// Display name for the Markdown table (e.g. "BERT-tiny"); the id when absent.
    #[serde(default)]
    pub name: Option<String>,
    pub family: Family,
    pub task: Task,
    pub model: String,
    pub tokenizer: String,
    pub data: String,
    pub n_bits: u32,
    #[serde(default)]
    pub frac_bits: Option<u32>,
    pub sigma_ref: SigmaRef,
    #[serde(default)]
    pub skip: bool,
    #[serde(default)]
    pub skip_reason: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    /// The command that produces `model` when it is absent (quoted in the skip reason).
    #[serde(default)]
    pub export_hint: Option<String>,
    /// GLUE rows: the checkpoint's id2label ({"0": "negative", "1": "positive"}), checked
    /// against the dataset's label order (`labels.rs`); absent, the export record beside
    /// the model is read, else the order is reported as unchecked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_map: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub global: Global,
    pub rows: Vec<Row>,
}

/// A parsed configuration plus where it came from (relative paths resolve against `base_dir`).
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub base_dir: PathBuf,
    pub sha256: String,
}

impl LoadedConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let config = parse(&bytes).with_context(|| format!("config {}", path.display()))?;
        // Paths in the shipped configs are relative to the repository root, which is where
        // users run the tool from; fall back to the config's parent for configs kept elsewhere.
        let base_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Ok(LoadedConfig {
            config,
            base_dir,
            sha256: crate::hash::sha256_hex(&bytes),
        })
    }

    pub fn resolve(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// Parse and validate. Row errors are reported as `row "<id>": <problem>` so the user knows
/// which entry to fix even when serde itself only knows the key.
pub fn parse(bytes: &[u8]) -> Result<Config> {
    let value: serde_json::Value = serde_json::from_slice(bytes).context("not valid JSON")?;
    let obj = value
        .as_object()
        .context("top level must be an object with \"global\" and \"rows\"")?;
    for key in obj.keys() {
        if key != "global" && key != "rows" {
            bail!("unknown top-level key \"{key}\" (expected \"global\" and \"rows\")");
        }
    }
    let global_value = obj.get("global").context("missing key \"global\"")?;
    let global: Global =
        serde_json::from_value(global_value.clone()).map_err(|e| anyhow::anyhow!("global: {e}"))?;
    let rows_value = obj.get("rows").context("missing key \"rows\"")?;
    let rows_array = rows_value.as_array().context("\"rows\" must be an array")?;
    let mut rows = Vec::with_capacity(rows_array.len());
    for (i, row_value) in rows_array.iter().enumerate() {
        let label = row_value
            .get("id")
            .and_then(|v| v.as_str())
            .map(|s| format!("row \"{s}\""))
            .unwrap_or_else(|| format!("row #{i}"));
        let row: Row = serde_json::from_value(row_value.clone())
            .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        rows.push(row);
    }
    let config = Config { global, rows };
    validate(&config)?;
    Ok(config)
}

fn validate(config: &Config) -> Result<()> {
    let g = &config.global;
    if g.seq_len == 0 {
        bail!("global: seq_len must be > 0");
    }
    if g.batch_size == Some(0) {
        bail!("global: batch_size must be > 0");
    }
    g.length_buckets
        .lengths(g.seq_len)
        .context("global: length_buckets")?;
    let mut seen = std::collections::HashSet::new();
    for row in &config.rows {
        let id = &row.id;
        if id.is_empty() || id.contains(',') {
            bail!("row \"{id}\": id must be non-empty and contain no comma");
        }
        if !seen.insert(id.clone()) {
            bail!("row \"{id}\": duplicate id");
        }
        if row.task.family() != row.family {
            bail!(
                "row \"{id}\": family \"{}\" does not fit task \"{}\" (expected \"{}\")",
                row.family.as_str(),
                row.task.as_str(),
                row.task.family().as_str()
            );
        }
        let frac = row.frac_bits.unwrap_or(g.frac_bits);
        suf_fixed::FixedPoint::new(row.n_bits, frac)
            .map_err(|e| anyhow::anyhow!("row \"{id}\": n_bits/frac_bits: {e}"))?;
        for (key, v) in [
            ("pytorch_acc", row.sigma_ref.pytorch_acc),
            ("sigma_acc", row.sigma_ref.sigma_acc),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("row \"{id}\": sigma_ref.{key} = {v} must be a fraction in [0, 1]");
            }
        }
        if row.label_map.is_some() && row.family != Family::BertSeqCls {
            bail!("row \"{id}\": label_map is for classifiers (family bert_seqcls) only");
        }
        if row.skip && row.skip_reason.as_deref().unwrap_or("").is_empty() {
            bail!("row \"{id}\": skip is true but skip_reason is missing");
        }
    }
    Ok(())
}

impl Row {
    pub fn frac_bits(&self, global: &Global) -> u32 {
        self.frac_bits.unwrap_or(global.frac_bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_json(extra: &str) -> String {
        format!(
            r#"{{"id": "tiny-sst2", "family": "bert_seqcls", "task": "glue/sst2", "model": "m.onnx",
                "tokenizer": "t.json", "data": "d.tsv", "n_bits": 37,
                "sigma_ref": {{"train_size": 67349, "val_size": 872, "pytorch_acc": 0.8245, "sigma_acc": 0.8257}}{extra}}}"#
        )
    }

    fn config_json(row: &str) -> String {
        format!(
            r#"{{"global": {{"seed": 0, "seq_len": 128, "frac_bits": 12, "default_device": "cpu"}}, "rows": [{row}]}}"#
        )
    }

    #[test]
    fn parses_a_valid_row() {
        let c = parse(config_json(&row_json("")).as_bytes()).unwrap();
        assert_eq!(c.rows[0].task, Task::Sst2);
        assert_eq!(c.rows[0].frac_bits(&c.global), 12);
    }

    #[test]
    fn unknown_row_key_names_row_and_key() {
        let err = format!(
            "{:#}",
            parse(config_json(&row_json(r#", "nbits": 3"#)).as_bytes()).unwrap_err()
        );
        assert!(
            err.contains("row \"tiny-sst2\"") && err.contains("nbits"),
            "{err}"
        );
    }

    #[test]
    fn missing_key_names_row_and_key() {
        let row = row_json("").replace(r#""tokenizer": "t.json","#, "");
        let err = format!("{:#}", parse(config_json(&row).as_bytes()).unwrap_err());
        assert!(
            err.contains("row \"tiny-sst2\"") && err.contains("tokenizer"),
            "{err}"
        );
    }

    #[test]
    fn unknown_task_is_an_error_naming_the_task() {
        let row = row_json("").replace("glue/sst2", "glue/cola");
        let err = format!("{:#}", parse(config_json(&row).as_bytes()).unwrap_err());
        assert!(
            err.contains("row \"tiny-sst2\"") && err.contains("glue/cola"),
            "{err}"
        );
    }

    #[test]
    fn unknown_global_key_and_bad_bits() {
        let c = config_json(&row_json("")).replace(r#""seed": 0"#, r#""seed": 0, "sed": 1"#);
        assert!(format!("{:#}", parse(c.as_bytes()).unwrap_err()).contains("sed"));
        let row = row_json("").replace(r#""n_bits": 37"#, r#""n_bits": 70"#);
        let err = format!("{:#}", parse(config_json(&row).as_bytes()).unwrap_err());
        assert!(err.contains("n_bits"), "{err}");
    }

    #[test]
    fn family_must_fit_task_and_skip_needs_reason() {
        let row = row_json("").replace("bert_seqcls", "gpt_lm");
        assert!(
            format!("{:#}", parse(config_json(&row).as_bytes()).unwrap_err())
                .contains("does not fit")
        );
        let err = format!(
            "{:#}",
            parse(config_json(&row_json(r#", "skip": true"#)).as_bytes()).unwrap_err()
        );
        assert!(err.contains("skip_reason"), "{err}");
    }

    /// scripts/export_onnx.py saves each checkpoint's tokenizer as models/<id>.tokenizer.json;
    /// a row reading another model's tokenizer (e.g. bert-base-uncased for every BERT)
    /// would tokenize with a vocabulary its checkpoint may not have.
    #[test]
    fn table4_rows_read_their_own_checkpoints_tokenizer() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/accuracy_table4.json");
        let c = parse(&std::fs::read(path).unwrap()).unwrap();
        let exported: Vec<&Row> = c
            .rows
            .iter()
            .filter(|r| {
                !r.skip
                    && r.export_hint
                        .as_deref()
                        .is_some_and(|h| h.contains("export_onnx.py"))
            })
            .collect();
        assert!(exported.len() >= 11, "{} exported rows", exported.len());
        for r in exported {
            let own = r.model.replace(".onnx", ".tokenizer.json");
            assert_eq!(r.tokenizer, own, "row {}", r.id);
        }
    }

    #[test]
    fn label_map_is_for_classifiers_only() {
        let row = row_json(r#", "label_map": {"0": "negative", "1": "positive"}"#);
        assert!(parse(config_json(&row).as_bytes()).is_ok());
        let lm = row
            .replace("bert_seqcls", "gpt_lm")
            .replace("glue/sst2", "lambada_openai");
        let err = format!("{:#}", parse(config_json(&lm).as_bytes()).unwrap_err());
        assert!(err.contains("label_map"), "{err}");
    }

    #[test]
    fn length_buckets_default_on_and_are_checked_against_seq_len() {
        let c = parse(config_json(&row_json("")).as_bytes()).unwrap();
        assert_eq!(
            c.global.length_buckets,
            crate::buckets::LengthBuckets::Enabled(true)
        );
        let off = config_json(&row_json(""))
            .replace(r#""seed": 0"#, r#""seed": 0, "length_buckets": false"#);
        assert!(parse(off.as_bytes())
            .unwrap()
            .global
            .length_buckets
            .is_off());
        let bad = config_json(&row_json(""))
            .replace(r#""seed": 0"#, r#""seed": 0, "length_buckets": [256]"#);
        let err = format!("{:#}", parse(bad.as_bytes()).unwrap_err());
        assert!(
            err.contains("length_buckets") && err.contains("256"),
            "{err}"
        );
    }

    #[test]
    fn accuracies_must_be_fractions() {
        let row = row_json("").replace("0.8245", "82.45");
        let err = format!("{:#}", parse(config_json(&row).as_bytes()).unwrap_err());
        assert!(err.contains("pytorch_acc"), "{err}");
    }
}
