//! Loading and saving ONNX models (prost types from `tract_onnx::pb`), external data included.

use anyhow::{anyhow, bail, Context, Result};
use prost::Message;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tract_onnx::pb::{tensor_proto::DataLocation, ModelProto, StringStringEntryProto, TensorProto};

/// Protobuf messages cannot exceed 2 GiB; beyond this size tensors go to an external file.
const INLINE_LIMIT: usize = 1_800_000_000;
/// Tensors at least this large are the ones moved out when a model must use external data.
const EXTERNAL_MIN_BYTES: usize = 1024;

/// Reads an ONNX model, resolving external-data tensors into memory.
pub fn load_model(path: &Path) -> Result<ModelProto> {
    let bytes = fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!("model file not found: {}", path.display()),
        _ => anyhow!("cannot read model file {}: {e}", path.display()),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    load_model_bytes(&bytes, dir).with_context(|| path.display().to_string())
}

/// Decodes an ONNX model from its bytes; external-data tensors are read from `dir`.
pub fn load_model_bytes(bytes: &[u8], dir: &Path) -> Result<ModelProto> {
    let mut model =
        ModelProto::decode(bytes).map_err(|e| anyhow!("not a valid ONNX model (protobuf: {e})"))?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| anyhow!("not an ONNX model: it has no graph"))?;
    if model.ir_version <= 0 || graph.node.is_empty() {
        bail!("not an ONNX model: no ir_version or no nodes");
    }
    for t in graph.initializer.iter_mut() {
        resolve_external(t, dir)?;
    }
    // Malformed structure is an error here, not a panic in the pass.
    crate::validate::check_graph(graph)?;
    Ok(model)
}

/// Just enough of ModelProto to find external-data files without decoding (or holding)
/// the tensors themselves: prost skips the fields a message does not declare.
mod slim {
    use tract_onnx::pb::StringStringEntryProto;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Model {
        #[prost(message, optional, tag = "7")]
        pub graph: Option<Graph>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Graph {
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<Tensor>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        #[prost(string, tag = "8")]
        pub name: String,
        #[prost(message, repeated, tag = "13")]
        pub external_data: Vec<StringStringEntryProto>,
        #[prost(int32, optional, tag = "14")]
        pub data_location: Option<i32>,
    }
}

/// The external-data files an ONNX file's tensors live in (paths beside the model, sorted,
/// each once): what must be hashed, besides the `.onnx` itself, to identify the model.
pub fn external_data_files(path: &Path) -> Result<Vec<PathBuf>> {
    let bytes = fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
    let model = slim::Model::decode(bytes.as_slice()).map_err(|e| {
        anyhow!(
            "{} is not a valid ONNX model (protobuf: {e})",
            path.display()
        )
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files = std::collections::BTreeSet::new();
    for t in model.graph.iter().flat_map(|g| &g.initializer) {
        if t.data_location != Some(DataLocation::External as i32) {
            continue;
        }
        let location = t
            .external_data
            .iter()
            .find(|e| e.key == "location")
            .map(|e| e.value.as_str())
            .ok_or_else(|| anyhow!("tensor {} has external data without a location", t.name))?;
        files.insert(dir.join(checked_location(&t.name, location)?));
    }
    Ok(files.into_iter().collect())
}

/// External data must stay beside the model: no absolute paths, no `..`.
fn checked_location<'a>(tensor: &str, location: &'a str) -> Result<&'a str> {
    if Path::new(location).is_absolute() || location.contains("..") {
        bail!("tensor {tensor}: external data location {location:?} must stay beside the model");
    }
    Ok(location)
}

fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

fn resolve_external(t: &mut TensorProto, dir: &Path) -> Result<()> {
    if !is_external(t) {
        return Ok(());
    }
    let entry = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let location = entry("location")
        .ok_or_else(|| anyhow!("tensor {} has external data without a location", t.name))?;
    let offset: u64 = entry("offset").map(str::parse).transpose()?.unwrap_or(0);
    let length: Option<u64> = entry("length").map(str::parse).transpose()?;
    let file_path = dir.join(checked_location(&t.name, location)?);
    let mut file = fs::File::open(&file_path).map_err(|e| {
        anyhow!(
            "tensor {}: cannot open external data {}: {e}",
            t.name,
            file_path.display()
        )
    })?;
    // A length or offset past the file's end is an error before any allocation: a corrupt
    // header must not ask for terabytes.
    let size = file.metadata()?.len();
    if offset > size || length.is_some_and(|n| n > size - offset) {
        bail!(
            "tensor {}: external data {} holds {size} bytes, the tensor claims offset {offset} and length {}",
            t.name,
            file_path.display(),
            length.map_or("(rest)".to_string(), |n| n.to_string())
        );
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    match length {
        Some(n) => {
            buf.resize(n as usize, 0);
            file.read_exact(&mut buf).map_err(|e| {
                anyhow!(
                    "tensor {}: external data {} is truncated: {e}",
                    t.name,
                    file_path.display()
                )
            })?;
        }
        None => {
            file.read_to_end(&mut buf)?;
        }
    }
    t.raw_data = buf;
    t.external_data.clear();
    t.data_location = None;
    Ok(())
}

/// Writes `model` to `path` atomically (temp file in the same folder, then rename).
///
/// Models too large for one protobuf message get their large tensors moved into
/// `<file name>.data` beside the model, as the ONNX external-data convention says.
pub fn save_model(model: &ModelProto, path: &Path) -> Result<()> {
    if model.encoded_len() <= INLINE_LIMIT {
        return write_atomic(path, &model.encode_to_vec());
    }
    let data_name = format!(
        "{}.data",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("model.onnx")
    );
    let data_path = path.with_file_name(&data_name);
    let mut model = model.clone();
    let mut blob = Vec::new();
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| anyhow!("model has no graph"))?;
    for t in graph.initializer.iter_mut() {
        if t.raw_data.len() < EXTERNAL_MIN_BYTES {
            continue;
        }
        let offset = blob.len();
        blob.extend_from_slice(&t.raw_data);
        let entries = [
            ("location", data_name.clone()),
            ("offset", offset.to_string()),
            ("length", t.raw_data.len().to_string()),
        ];
        t.external_data = entries
            .into_iter()
            .map(|(key, value)| StringStringEntryProto {
                key: key.into(),
                value,
            })
            .collect();
        t.data_location = Some(DataLocation::External as i32);
        t.raw_data = Vec::new();
    }
    write_atomic(&data_path, &blob)?;
    write_atomic(path, &model.encode_to_vec())
}

/// Writes bytes to a temp file beside `path`, then renames it: never a half-written output.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        bail!("cannot write output {}: {e}", path.display());
    }
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;

    #[test]
    fn external_data_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = GraphBuilder::new("ext");
        b.input_f32("x", &[2, 300]);
        let w: Vec<f32> = (0..300 * 4).map(|i| i as f32 * 0.25).collect();
        b.init_f32("w", &[300, 4], &w);
        b.node("MatMul", &["x", "w"], &["y"]);
        b.output("y");
        let mut model = b.build();
        // Write the weight out as external data by hand, as exporters do.
        let t = &mut model.graph.as_mut().unwrap().initializer[0];
        fs::write(dir.path().join("w.bin"), &t.raw_data).unwrap();
        t.external_data = vec![
            StringStringEntryProto {
                key: "location".into(),
                value: "w.bin".into(),
            },
            StringStringEntryProto {
                key: "offset".into(),
                value: "0".into(),
            },
        ];
        t.data_location = Some(DataLocation::External as i32);
        t.raw_data.clear();
        let path = dir.path().join("m.onnx");
        fs::write(&path, model.encode_to_vec()).unwrap();
        let loaded = load_model(&path).unwrap();
        let t = &loaded.graph.as_ref().unwrap().initializer[0];
        assert!(!is_external(t));
        assert_eq!(crate::tensor::values_f64(t).unwrap()[5], 1.25);
        // A length past the file's end is refused before anything is allocated.
        let mut long = model.clone();
        let t = &mut long.graph.as_mut().unwrap().initializer[0];
        t.external_data.push(StringStringEntryProto {
            key: "length".into(),
            value: "1000000000000".into(),
        });
        let long_path = dir.path().join("long.onnx");
        fs::write(&long_path, long.encode_to_vec()).unwrap();
        let err = format!("{:#}", load_model(&long_path).unwrap_err());
        assert!(err.contains("holds 4800 bytes"), "{err}");
        // A missing external file names the tensor and the file.
        fs::remove_file(dir.path().join("w.bin")).unwrap();
        let err = load_model(&path).unwrap_err();
        assert!(format!("{err:#}").contains("w.bin"), "{err:#}");
    }

    #[test]
    fn failed_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("out.onnx");
        let err = write_atomic(&path, b"abc").unwrap_err();
        assert!(err.to_string().starts_with("cannot write output"), "{err}");
        assert!(!path.exists());
    }
}
