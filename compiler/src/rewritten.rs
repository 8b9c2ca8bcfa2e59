//! Recognising a model that suf has already rewritten. Compiling one again would put a
//! second layer of SUF nodes on top of the first, and evaluating one as the float graph
//! would quantize twice and call the result float; both tools refuse such a model.

use anyhow::{bail, Result};
use tract_onnx::pb::{ModelProto, StringStringEntryProto};

use crate::SUF_DOMAIN;

/// Metadata key that `suf-compile` writes into every model it saves.
pub const MARKER_KEY: &str = "suf.rewritten";

/// Why `model` looks like suf output, or None for an ordinary model.
pub fn evidence(model: &ModelProto) -> Option<String> {
    if let Some(m) = model.metadata_props.iter().find(|p| p.key == MARKER_KEY) {
        return Some(format!("its metadata says {MARKER_KEY}: {}", m.value));
    }
    let graph = model.graph.as_ref()?;
    if let Some(n) = graph.node.iter().find(|n| n.domain == SUF_DOMAIN) {
        return Some(format!(
            "it has SUF nodes (first: {} `{}`)",
            n.op_type, n.name
        ));
    }
    if model.opset_import.iter().any(|o| o.domain == SUF_DOMAIN) {
        return Some(format!("it imports the {SUF_DOMAIN} domain"));
    }
    // A `--lower`ed model has only standard ops; its nodes keep the SUF node's name as prefix.
    if let Some(n) = graph.node.iter().find(|n| lowered_name(&n.name)) {
        return Some(format!(
            "it has lowered SUF nodes (first: {} `{}`)",
            n.op_type, n.name
        ));
    }
    None
}

fn lowered_name(name: &str) -> bool {
    const KINDS: [&str; 8] = [
        "embedding",
        "matmul",
        "add",
        "layernorm",
        "rmsnorm",
        "softmax",
        "gelu",
        "silu",
    ];
    name.split('/').any(|part| {
        part.strip_prefix("suf_")
            .is_some_and(|kind| KINDS.contains(&kind))
    })
}

/// An error when `model` (read from `what`) is already suf output.
pub fn refuse(model: &ModelProto, what: &str) -> Result<()> {
    if let Some(why) = evidence(model) {
        bail!(
            "{what} was already rewritten by suf ({why}); give the original exported model, \
             not suf-compile's output"
        );
    }
    Ok(())
}

/// Records in `model` that suf rewrote it, with the options, so that a later run refuses it.
pub fn mark(model: &mut ModelProto, options: &str) {
    model.metadata_props.retain(|p| p.key != MARKER_KEY);
    model.metadata_props.push(StringStringEntryProto {
        key: MARKER_KEY.into(),
        value: options.into(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;

    #[test]
    fn plain_model_passes_and_marked_or_suf_models_do_not() {
        let mut b = GraphBuilder::new("g");
        b.input_f32("x", &[4]);
        b.node("Relu", &["x"], &["y"]);
        b.output("y");
        let plain = b.build();
        assert!(evidence(&plain).is_none());
        let mut marked = plain.clone();
        mark(&mut marked, "n_bits=37");
        assert!(refuse(&marked, "m.onnx")
            .unwrap_err()
            .to_string()
            .contains("already rewritten"));
        let mut lowered = plain.clone();
        lowered.graph.as_mut().unwrap().node[0].name = "/bert/MatMul/suf_matmul/scaled".into();
        assert!(evidence(&lowered).unwrap().contains("lowered SUF nodes"));
        let mut domain = plain;
        domain.graph.as_mut().unwrap().node[0].domain = SUF_DOMAIN.into();
        assert!(evidence(&domain).unwrap().contains("SUF nodes"));
    }
}
