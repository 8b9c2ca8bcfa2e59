//! Reading weights and constants out of the ONNX protobuf (prost types from tract_onnx::pb,
//! no tract computation), and editing initializers to build the test regimes.

use prost::Message;
use std::path::Path;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};

const FLOAT: i32 = 1;
const INT64: i32 = 7;

pub fn load(path: &Path) -> ModelProto {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    ModelProto::decode(bytes.as_slice())
        .unwrap_or_else(|e| panic!("{} is not an ONNX model: {e}", path.display()))
}

pub fn graph(model: &ModelProto) -> &GraphProto {
    model.graph.as_ref().expect("the model has a graph")
}

fn f32_values(t: &TensorProto) -> Vec<f32> {
    assert_eq!(t.data_type, FLOAT, "tensor `{}` is not float32", t.name);
    if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

fn i64_values(t: &TensorProto) -> Vec<i64> {
    assert_eq!(t.data_type, INT64, "tensor `{}` is not int64", t.name);
    if t.raw_data.is_empty() {
        t.int64_data.clone()
    } else {
        t.raw_data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()
    }
}

/// A float tensor read from the model: shape and values.
#[derive(Debug, Clone)]
pub struct Weights {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Name-based access to a graph's nodes, initializers and constants.
pub struct Graph<'a> {
    g: &'a GraphProto,
}

impl<'a> Graph<'a> {
    pub fn new(model: &'a ModelProto) -> Self {
        Graph { g: graph(model) }
    }

    pub fn node(&self, name: &str) -> &'a NodeProto {
        self.g
            .node
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("the fixture has no node named `{name}`"))
    }

    /// The tensor proto behind a name: an initializer, or a Constant node's value.
    fn tensor(&self, name: &str) -> &'a TensorProto {
        if let Some(t) = self.g.initializer.iter().find(|t| t.name == name) {
            return t;
        }
        let constant = self
            .g
            .node
            .iter()
            .find(|n| n.op_type == "Constant" && n.output.iter().any(|o| o == name))
            .unwrap_or_else(|| panic!("`{name}` is neither an initializer nor a Constant"));
        constant
            .attribute
            .iter()
            .find_map(|a| a.t.as_ref())
            .unwrap_or_else(|| panic!("Constant `{}` holds no tensor", constant.name))
    }

    pub fn weights(&self, name: &str) -> Weights {
        let t = self.tensor(name);
        Weights {
            shape: t.dims.iter().map(|&d| d as usize).collect(),
            values: f32_values(t),
        }
    }

    pub fn scalar_f32(&self, name: &str) -> f32 {
        let v = f32_values(self.tensor(name));
        assert_eq!(v.len(), 1, "`{name}` is not a scalar");
        v[0]
    }

    pub fn i64s(&self, name: &str) -> Vec<i64> {
        i64_values(self.tensor(name))
    }

    /// The weight operand (input 1) of a MatMul/Gemm node.
    pub fn matmul_weights(&self, node: &str) -> Weights {
        self.weights(&self.node(node).input[1])
    }

    /// The operand of an Add node that is not `from` (a bias, read through its name).
    pub fn add_operand(&self, node: &str, from: &str) -> Weights {
        let n = self.node(node);
        let other = n
            .input
            .iter()
            .find(|i| *i != from)
            .unwrap_or_else(|| panic!("Add `{node}` has no operand besides `{from}`"));
        self.weights(other)
    }

    pub fn attr_int(&self, node: &str, attr: &str) -> Option<i64> {
        self.node(node)
            .attribute
            .iter()
            .find(|a| a.name == attr)
            .map(|a| a.i)
    }
}

/// Replaces every Identity of an initializer by a copy of that initializer under the
/// Identity's output name, so tied parameters (the exporter shares all-zero biases and
/// all-one LayerNorm weights) can be given distinct values.
pub fn untie_identities(model: &mut ModelProto) {
    let g = model.graph.as_mut().expect("the model has a graph");
    let mut kept = Vec::with_capacity(g.node.len());
    for n in std::mem::take(&mut g.node) {
        let source = (n.op_type == "Identity")
            .then(|| g.initializer.iter().find(|t| t.name == n.input[0]))
            .flatten();
        match source {
            Some(t) => {
                let mut copy = t.clone();
                copy.name.clone_from(&n.output[0]);
                g.initializer.push(copy);
            }
            None => kept.push(n),
        }
    }
    g.node = kept;
}

/// Rewrites a float initializer element by element (flat index, value).
pub fn map_initializer(model: &mut ModelProto, name: &str, mut f: impl FnMut(usize, f32) -> f32) {
    let g = model.graph.as_mut().expect("the model has a graph");
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no initializer named `{name}`"));
    let values: Vec<f32> = f32_values(t)
        .into_iter()
        .enumerate()
        .map(|(i, v)| f(i, v))
        .collect();
    t.float_data.clear();
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
}

/// Names of the rank-1 float initializers (biases and LayerNorm parameters here).
pub fn rank1_initializers(model: &ModelProto) -> Vec<String> {
    graph(model)
        .initializer
        .iter()
        .filter(|t| t.dims.len() == 1 && t.data_type == FLOAT)
        .map(|t| t.name.clone())
        .collect()
}

/// The initializers that MatMul/Gemm nodes read as their weight operand.
pub fn matmul_weight_initializers(model: &ModelProto) -> Vec<String> {
    let g = graph(model);
    let mut names: Vec<String> = g
        .node
        .iter()
        .filter(|n| n.op_type == "MatMul" || n.op_type == "Gemm")
        .filter_map(|n| n.input.get(1))
        .filter(|i| g.initializer.iter().any(|t| &t.name == *i))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}
