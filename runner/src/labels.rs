//! GLUE label order. The data files give label ids in the Hugging Face `glue` convention;
//! a classifier's output k means whatever its checkpoint's `id2label[k]` says. A checkpoint
//! trained with another order would score inverted accuracy, so the row's `label_map` (the
//! checkpoint's id2label, recorded by scripts/export_onnx.py) is checked against the
//! dataset's labels, and a row whose map contradicts them is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::Task;

/// The dataset's label names, indexed by the label id the data files use.
pub fn dataset_labels(task: Task) -> &'static [&'static str] {
    match task {
        Task::Sst2 => &["negative", "positive"],
        Task::Mrpc => &["not_equivalent", "equivalent"],
        Task::Qnli => &["entailment", "not_entailment"],
        Task::LambadaOpenai => &[],
    }
}

/// Lower case, separators as `_`, common abbreviations spelled out.
fn canonical(name: &str) -> String {
    let s: String = name
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c == '-' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    match s.as_str() {
        "neg" => "negative".into(),
        "pos" => "positive".into(),
        "not_paraphrase" | "not_equal" => "not_equivalent".into(),
        "paraphrase" | "equal" => "equivalent".into(),
        "not_entailed" => "not_entailment".into(),
        "entailed" => "entailment".into(),
        _ => s,
    }
}

/// `LABEL_3` or `3`: a name that says nothing about what the class means.
fn is_generic(name: &str) -> bool {
    let n = name.trim();
    let digits = n
        .strip_prefix("LABEL_")
        .or_else(|| n.strip_prefix("label_"))
        .unwrap_or(n);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// Where a row's label map came from, for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelMap {
    pub map: BTreeMap<String, String>,
    pub source: String,
}

/// The row's `label_map`, else the `label_map` (or `id2label`) of the export record
/// `<model stem>.export.json` that scripts/export_onnx.py writes beside the model.
pub fn find(
    config_map: Option<&BTreeMap<String, String>>,
    model: &Path,
) -> Result<Option<LabelMap>> {
    if let Some(map) = config_map {
        return Ok(Some(LabelMap {
            map: map.clone(),
            source: "the config's label_map".into(),
        }));
    }
    let record = export_record(model);
    if !record.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&record)
        .with_context(|| format!("cannot read {}", record.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", record.display()))?;
    let Some(obj) = v
        .get("label_map")
        .or_else(|| v.get("id2label"))
        .and_then(|m| m.as_object())
    else {
        return Ok(None);
    };
    let mut map = BTreeMap::new();
    for (k, name) in obj {
        let name = name
            .as_str()
            .with_context(|| format!("{}: label {k} is not a string", record.display()))?;
        map.insert(k.clone(), name.to_string());
    }
    Ok(Some(LabelMap {
        map,
        source: record.display().to_string(),
    }))
}

/// `models/x.onnx` -> `models/x.export.json`.
pub fn export_record(model: &Path) -> PathBuf {
    model.with_extension("export.json")
}

/// Checks a classifier with `classes` outputs against the task's labels. Ok(None): the
/// order is verified; Ok(Some(note)): it could not be (the report shows the note).
pub fn check(task: Task, classes: usize, map: Option<&LabelMap>) -> Result<Option<String>> {
    let labels = dataset_labels(task);
    if classes != labels.len() {
        bail!(
            "the model has {classes} output classes; {} has {} labels ({})",
            task.as_str(),
            labels.len(),
            labels.join(", ")
        );
    }
    let Some(LabelMap { map, source }) = map else {
        return Ok(Some(format!(
            "label order unchecked: no label_map (assumed {})",
            order(labels)
        )));
    };
    let mut by_id = vec![None; classes];
    for (k, name) in map {
        let id: usize = k
            .trim()
            .parse()
            .ok()
            .filter(|&i| i < classes)
            .with_context(|| format!("{source}: key \"{k}\" is not a class index 0..{classes}"))?;
        by_id[id] = Some(name.as_str());
    }
    let mut generic = 0;
    for (id, name) in by_id.iter().enumerate() {
        let name = name.with_context(|| format!("{source}: no name for class {id}"))?;
        if is_generic(name) {
            generic += 1;
            continue;
        }
        let c = canonical(name);
        match labels.iter().position(|l| *l == c) {
            Some(j) if j == id => {}
            Some(j) => bail!(
                "{source} says model output {id} is \"{name}\", but {} label {id} is \"{}\" (\"{name}\" is label {j}): the model's label order contradicts the dataset's",
                task.as_str(),
                labels[id]
            ),
            None => bail!(
                "{source}: class {id} is \"{name}\", which is none of {}'s labels ({}) nor a generic LABEL_k; fix the label_map",
                task.as_str(),
                labels.join(", ")
            ),
        }
    }
    Ok((generic > 0).then(|| {
        format!(
            "label order unchecked: {source} names classes generically (LABEL_k); assumed {}",
            order(labels)
        )
    }))
}

fn order(labels: &[&str]) -> String {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{i} = {l}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> LabelMap {
        LabelMap {
            map: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            source: "row label_map".into(),
        }
    }

    #[test]
    fn a_reversed_order_is_refused() {
        let m = map(&[("0", "POSITIVE"), ("1", "NEGATIVE")]);
        let err = check(Task::Sst2, 2, Some(&m)).unwrap_err().to_string();
        assert!(err.contains("contradicts"), "{err}");
        let m = map(&[("0", "not_entailment"), ("1", "entailment")]);
        assert!(check(Task::Qnli, 2, Some(&m)).is_err());
    }

    #[test]
    fn the_glue_order_passes_and_generic_names_are_a_note() {
        let m = map(&[("0", "negative"), ("1", "positive")]);
        assert_eq!(check(Task::Sst2, 2, Some(&m)).unwrap(), None);
        let m = map(&[("0", "not equivalent"), ("1", "Equivalent")]);
        assert_eq!(check(Task::Mrpc, 2, Some(&m)).unwrap(), None);
        let m = map(&[("0", "LABEL_0"), ("1", "LABEL_1")]);
        let note = check(Task::Mrpc, 2, Some(&m)).unwrap().unwrap();
        assert!(note.contains("unchecked"), "{note}");
        let note = check(Task::Mrpc, 2, None).unwrap().unwrap();
        assert!(note.contains("no label_map"), "{note}");
    }

    #[test]
    fn unknown_names_and_class_counts_are_errors() {
        let m = map(&[("0", "happy"), ("1", "positive")]);
        assert!(check(Task::Sst2, 2, Some(&m)).is_err());
        let err = check(Task::Sst2, 3, None).unwrap_err().to_string();
        assert!(err.contains("3 output classes"), "{err}");
        let m = map(&[("0", "negative"), ("2", "positive")]);
        assert!(check(Task::Sst2, 2, Some(&m)).is_err());
    }

    #[test]
    fn the_export_record_beside_the_model_is_found() {
        let d = tempfile::tempdir().unwrap();
        let model = d.path().join("bert-tiny-sst2.onnx");
        assert_eq!(find(None, &model).unwrap(), None);
        std::fs::write(
            d.path().join("bert-tiny-sst2.export.json"),
            r#"{"row": "bert-tiny-sst2", "id2label": {"0": "positive", "1": "negative"}}"#,
        )
        .unwrap();
        let found = find(None, &model).unwrap().unwrap();
        assert_eq!(found.map["0"], "positive");
        assert!(check(Task::Sst2, 2, Some(&found)).is_err());
    }
}
