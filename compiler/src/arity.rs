//! Reading a node's inputs and outputs without trusting its arity.
//!
//! `compile` is public and may get a raw proto that never went through the loader's
//! checks (validate.rs), so a pass that needs input `k` asks for it here: a node with too
//! few is an error naming the node, not an index panic. Pattern matchers, for which such a
//! node simply does not match, use `get(k)?` instead.

use anyhow::{anyhow, Result};
use tract_onnx::pb::NodeProto;

/// How errors name a node: `node "/bert/MatMul" (MatMul)` (its op type when unnamed).
pub fn describe(n: &NodeProto) -> String {
    if n.name.is_empty() {
        format!("unnamed node ({})", n.op_type)
    } else {
        format!("node \"{}\" ({})", n.name, n.op_type)
    }
}

fn too_few(n: &NodeProto, what: &str, has: usize, need: usize) -> anyhow::Error {
    let plural = if has == 1 { "" } else { "s" };
    anyhow!(
        "{} has {has} {what}{plural}; {} needs {need}",
        describe(n),
        n.op_type
    )
}

/// Input `k` of `n` (0-based).
pub fn input(n: &NodeProto, k: usize) -> Result<&str> {
    n.input
        .get(k)
        .map(String::as_str)
        .ok_or_else(|| too_few(n, "input", n.input.len(), k + 1))
}

/// Output `k` of `n` (0-based).
pub fn output(n: &NodeProto, k: usize) -> Result<&str> {
    n.output
        .get(k)
        .map(String::as_str)
        .ok_or_else(|| too_few(n, "output", n.output.len(), k + 1))
}

/// The inputs ONNX requires of `n`'s op (the loader's table, `validate::required_inputs`)
/// are there.
pub fn require_inputs(n: &NodeProto) -> Result<()> {
    let need = crate::validate::required_inputs(&n.op_type);
    if n.input.len() < need {
        return Err(too_few(n, "input", n.input.len(), need));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            name: name.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn missing_inputs_and_outputs_are_errors_naming_the_node() {
        let n = node("/mm", "MatMul", &["a"], &[]);
        assert_eq!(input(&n, 0).unwrap(), "a");
        assert_eq!(
            input(&n, 1).unwrap_err().to_string(),
            "node \"/mm\" (MatMul) has 1 input; MatMul needs 2"
        );
        assert_eq!(
            output(&n, 0).unwrap_err().to_string(),
            "node \"/mm\" (MatMul) has 0 outputs; MatMul needs 1"
        );
        assert_eq!(
            require_inputs(&n).unwrap_err().to_string(),
            "node \"/mm\" (MatMul) has 1 input; MatMul needs 2"
        );
        let unnamed = node("", "Softmax", &[], &["y"]);
        assert_eq!(
            require_inputs(&unnamed).unwrap_err().to_string(),
            "unnamed node (Softmax) has 0 inputs; Softmax needs 1"
        );
        require_inputs(&node("r", "Relu", &["x"], &["y"])).unwrap();
    }
}
