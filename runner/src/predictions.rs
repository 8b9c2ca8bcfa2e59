//! `--predictions-out`: every example's label, float and SUF predictions as JSON lines,
//! grouped by row. The file is rewritten after every row; a resumed run carries over the
//! lines of the rows it reuses, recognised by the digest the report keeps for each row.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::evaluate::Prediction;
use crate::{hash, report};

/// One row's lines, exactly as written.
#[derive(Debug, Clone, PartialEq)]
pub struct RowPredictions {
    pub row: String,
    pub lines: Vec<u8>,
}

/// The JSON lines of one row's predictions (each line names the row).
pub fn lines(row: &str, predictions: &[Prediction]) -> Result<RowPredictions> {
    let mut out = Vec::new();
    for p in predictions {
        let mut v = serde_json::to_value(p)?;
        v.as_object_mut()
            .context("a prediction serialises to an object")?
            .insert("row".into(), row.into());
        out.extend(serde_json::to_vec(&v)?);
        out.push(b'\n');
    }
    Ok(RowPredictions {
        row: row.to_string(),
        lines: out,
    })
}

/// What the report records of a row's lines, to recognise them later.
pub fn digest(lines: &[u8]) -> String {
    hash::sha256_hex(lines)
}

pub fn write(path: &Path, rows: &[RowPredictions]) -> Result<()> {
    let all: Vec<u8> = rows.iter().flat_map(|r| r.lines.iter().copied()).collect();
    report::write_atomic(path, &all)
}

/// An earlier file's lines by row (empty when there is none).
pub fn read(path: &Path) -> Result<HashMap<String, Vec<u8>>> {
    let mut out: HashMap<String, Vec<u8>> = HashMap::new();
    if !path.exists() {
        return Ok(out);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read predictions {}", path.display()))?;
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: not a predictions line; remove the file or choose another --predictions-out",
                path.display(),
                i + 1
            )
        })?;
        let row = v
            .get("row")
            .and_then(|r| r.as_str())
            .with_context(|| format!("{}:{}: line names no row", path.display(), i + 1))?;
        let block = out.entry(row.to_string()).or_default();
        block.extend(line.as_bytes());
        block.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = Prediction {
            index: 3,
            label: 1,
            float: 0,
            float_word_correct: None,
            suf: [("output".to_string(), 1)].into(),
        };
        let a = lines("a", std::slice::from_ref(&p)).unwrap();
        let b = lines("b", &[p.clone(), p]).unwrap();
        let path = d.path().join("p.jsonl");
        write(&path, &[a.clone(), b.clone()]).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back["a"], a.lines);
        assert_eq!(digest(&back["b"]), digest(&b.lines));
        assert_eq!(
            std::str::from_utf8(&a.lines).unwrap(),
            "{\"float\":0,\"index\":3,\"label\":1,\"row\":\"a\",\"suf\":{\"output\":1}}\n"
        );
    }
}
