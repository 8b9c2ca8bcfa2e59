//! Evaluation datasets from local files: GLUE TSV as distributed, GLUE JSON lines, LAMBADA jsonl.
//!
//! GLUE TSVs are read the way GLUE's own loaders read them: split on tabs, no quote handling
//! (MRPC sentences contain unbalanced `"`), UTF-8 BOM tolerated. A malformed row is an error
//! naming the file and line; nothing is dropped silently.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::config::Task;

/// One evaluation example, before tokenization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Example {
    /// Sentence classification (SST-2) or pair classification (MRPC, QNLI).
    Classify {
        text_a: String,
        text_b: Option<String>,
        label: u32,
    },
    /// LAMBADA: the whole passage; the last token is the target.
    Passage { text: String },
}

/// Reads every example of `path` for `task`. The format follows the extension:
/// `.tsv` = GLUE TSV, `.jsonl`/`.json` = one JSON object per line.
pub fn load(task: Task, path: &Path) -> Result<Vec<Example>> {
    if !path.exists() {
        bail!(
            "data file not found: {} (see ../shared/data/README.md or scripts/fetch_data.py)",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read data file {}", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let examples = match (task, ext.as_str()) {
        (Task::LambadaOpenai, "jsonl" | "json") => parse_lambada(text, path)?,
        (Task::LambadaOpenai, _) => bail!("{}: LAMBADA data must be .jsonl", path.display()),
        (_, "tsv") => parse_glue_tsv(task, text, path)?,
        (_, "jsonl" | "json") => parse_glue_jsonl(task, text, path)?,
        (_, other) => bail!(
            "{}: unsupported data extension \".{other}\" (expected .tsv or .jsonl)",
            path.display()
        ),
    };
    if examples.is_empty() {
        bail!("{}: no examples", path.display());
    }
    Ok(examples)
}

/// Lines with their 1-based numbers; a final newline does not make an empty last line.
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    body.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(move |_| !body.is_empty())
}

/// Column names each task needs: (first text, optional second text, label).
fn glue_columns(task: Task) -> (&'static str, Option<&'static str>, &'static str) {
    match task {
        Task::Sst2 => ("sentence", None, "label"),
        Task::Mrpc => ("#1 String", Some("#2 String"), "Quality"),
        Task::Qnli => ("question", Some("sentence"), "label"),
        Task::LambadaOpenai => unreachable!("LAMBADA is not a GLUE task"),
    }
}

/// HF `glue` label convention: QNLI entailment = 0, not_entailment = 1; the others are 0/1 already.
fn parse_label(task: Task, raw: &str) -> Result<u32> {
    let raw = raw.trim();
    match (task, raw) {
        (Task::Qnli, "entailment") => Ok(0),
        (Task::Qnli, "not_entailment") => Ok(1),
        (_, "0") => Ok(0),
        (_, "1") => Ok(1),
        _ => Err(anyhow!("invalid label \"{raw}\" for {}", task.as_str())),
    }
}

fn parse_glue_tsv(task: Task, text: &str, path: &Path) -> Result<Vec<Example>> {
    let mut lines = numbered_lines(text);
    let (_, header) = lines
        .next()
        .ok_or_else(|| anyhow!("{}: empty file (no header)", path.display()))?;
    let names: Vec<&str> = header.split('\t').map(str::trim).collect();
    let (a_name, b_name, label_name) = glue_columns(task);
    let col = |name: &str| {
        names.iter().position(|n| *n == name).ok_or_else(|| {
            anyhow!(
                "{}:1: header has no \"{name}\" column (found {:?}) for {}",
                path.display(),
                names,
                task.as_str()
            )
        })
    };
    let a_ix = col(a_name)?;
    let b_ix = b_name.map(col).transpose()?;
    let label_ix = col(label_name)?;
    let mut out = Vec::new();
    for (line_no, line) in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != names.len() {
            bail!(
                "{}:{line_no}: corrupt row: expected {} tab-separated fields, found {}",
                path.display(),
                names.len(),
                fields.len()
            );
        }
        let label = parse_label(task, fields[label_ix])
            .with_context(|| format!("{}:{line_no}", path.display()))?;
        out.push(Example::Classify {
            text_a: fields[a_ix].to_string(),
            text_b: b_ix.map(|i| fields[i].to_string()),
            label,
        });
    }
    Ok(out)
}

/// JSON lines with HF `glue` field names (`sentence`; `sentence1`/`sentence2`; `question`/`sentence`).
fn parse_glue_jsonl(task: Task, text: &str, path: &Path) -> Result<Vec<Example>> {
    let (a_key, b_key) = match task {
        Task::Sst2 => ("sentence", None),
        Task::Mrpc => ("sentence1", Some("sentence2")),
        Task::Qnli => ("question", Some("sentence")),
        Task::LambadaOpenai => unreachable!("LAMBADA is not a GLUE task"),
    };
    let mut out = Vec::new();
    for (line_no, line) in numbered_lines(text) {
        let at = || format!("{}:{line_no}", path.display());
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow!("{}: corrupt row: invalid JSON: {e}", at()))?;
        let get_str = |key: &str| {
            value
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{}: corrupt row: missing string field \"{key}\"", at()))
        };
        let label = match value.get("label") {
            Some(serde_json::Value::Number(n)) => parse_label(task, &n.to_string()),
            Some(serde_json::Value::String(s)) => parse_label(task, s),
            _ => Err(anyhow!("missing field \"label\"")),
        }
        .map_err(|e| anyhow!("{}: corrupt row: {e}", at()))?;
        out.push(Example::Classify {
            text_a: get_str(a_key)?,
            text_b: b_key.map(get_str).transpose()?,
            label,
        });
    }
    Ok(out)
}

fn parse_lambada(text: &str, path: &Path) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for (line_no, line) in numbered_lines(text) {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            anyhow!(
                "{}:{line_no}: corrupt row: invalid JSON: {e}",
                path.display()
            )
        })?;
        let passage = value.get("text").and_then(|v| v.as_str()).ok_or_else(|| {
            anyhow!(
                "{}:{line_no}: corrupt row: missing string field \"text\"",
                path.display()
            )
        })?;
        if passage.split_whitespace().count() < 2 {
            bail!(
                "{}:{line_no}: corrupt row: passage needs a context and a final word",
                path.display()
            );
        }
        out.push(Example::Passage {
            text: passage.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn sst2_tsv() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "dev.tsv",
            "sentence\tlabel\nit 's good . \t1\nbad \t0\n",
        );
        let ex = load(Task::Sst2, &p).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(
            ex[0],
            Example::Classify {
                text_a: "it 's good . ".into(),
                text_b: None,
                label: 1
            }
        );
    }

    #[test]
    fn mrpc_tsv_with_bom_and_unbalanced_quotes() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "dev.tsv",
            "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said.\t\"He said so.\n0\t3\t4\tA \"b\" c\td\n",
        );
        let ex = load(Task::Mrpc, &p).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(
            ex[0],
            Example::Classify {
                text_a: "He said.".into(),
                text_b: Some("\"He said so.".into()),
                label: 1
            }
        );
        assert!(matches!(&ex[1], Example::Classify { label: 0, .. }));
    }

    #[test]
    fn qnli_tsv_labels() {
        let d = tempfile::tempdir().unwrap();
        let p = write(&d, "dev.tsv", "index\tquestion\tsentence\tlabel\n0\tq?\ts.\tentailment\n1\tq2?\ts2.\tnot_entailment\n");
        let ex = load(Task::Qnli, &p).unwrap();
        let labels: Vec<u32> = ex
            .iter()
            .map(|e| match e {
                Example::Classify { label, .. } => *label,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(labels, vec![0, 1]);
    }

    #[test]
    fn corrupt_tsv_row_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "dev.tsv",
            "sentence\tlabel\nok\t1\nbroken row without tab\n",
        );
        let err = format!("{:#}", load(Task::Sst2, &p).unwrap_err());
        assert!(
            err.contains("dev.tsv:3") && err.contains("corrupt"),
            "{err}"
        );
        let p = write(&d, "bad_label.tsv", "sentence\tlabel\nok\t7\n");
        let err = format!("{:#}", load(Task::Sst2, &p).unwrap_err());
        assert!(
            err.contains("bad_label.tsv:2") && err.contains("\"7\""),
            "{err}"
        );
    }

    #[test]
    fn missing_header_column_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = write(&d, "dev.tsv", "text\tlabel\nok\t1\n");
        assert!(format!("{:#}", load(Task::Sst2, &p).unwrap_err()).contains("\"sentence\""));
    }

    #[test]
    fn glue_jsonl() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "dev.jsonl",
            "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": 1}\n{\"sentence1\": \"c\", \"sentence2\": \"d\", \"label\": \"0\"}\n",
        );
        assert_eq!(load(Task::Mrpc, &p).unwrap().len(), 2);
        let p = write(
            &d,
            "bad.jsonl",
            "{\"sentence\": \"a\", \"label\": 1}\n{\"sentence\": \"a\"}\n",
        );
        let err = format!("{:#}", load(Task::Sst2, &p).unwrap_err());
        assert!(
            err.contains("bad.jsonl:2") && err.contains("label"),
            "{err}"
        );
    }

    #[test]
    fn lambada_jsonl_and_corrupt_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "l.jsonl",
            "{\"text\": \"the cat sat on the mat\"}\n{\"text\": \"a b\"}\n",
        );
        assert_eq!(load(Task::LambadaOpenai, &p).unwrap().len(), 2);
        let p = write(
            &d,
            "c.jsonl",
            "{\"text\": \"the cat\"}\n{\"text\": \"unterminated\n",
        );
        let err = format!("{:#}", load(Task::LambadaOpenai, &p).unwrap_err());
        assert!(err.contains("c.jsonl:2"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = format!(
            "{:#}",
            load(Task::Sst2, Path::new("/nonexistent/dev.tsv")).unwrap_err()
        );
        assert!(
            err.contains("data file not found: /nonexistent/dev.tsv"),
            "{err}"
        );
    }
}
