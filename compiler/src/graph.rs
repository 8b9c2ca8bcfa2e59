//! A read-only view of an ONNX graph for matching: who produces and who consumes each
//! tensor, constant values, and a petgraph of node-to-node data flow.

use crate::tensor;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};
use std::collections::{HashMap, HashSet};
use tract_onnx::pb::{GraphProto, NodeProto, TensorProto};

pub struct GraphView<'a> {
    pub graph: &'a GraphProto,
    producer: HashMap<&'a str, usize>,
    consumers: HashMap<&'a str, Vec<usize>>,
    initializers: HashMap<&'a str, &'a TensorProto>,
    inputs: HashSet<&'a str>,
    outputs: HashSet<&'a str>,
    flow: DiGraph<usize, ()>,
}

impl<'a> GraphView<'a> {
    pub fn new(graph: &'a GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
            for input in n.input.iter().filter(|s| !s.is_empty()) {
                consumers.entry(input.as_str()).or_default().push(i);
            }
        }
        let mut flow = DiGraph::with_capacity(graph.node.len(), graph.node.len() * 2);
        for i in 0..graph.node.len() {
            flow.add_node(i);
        }
        for (i, n) in graph.node.iter().enumerate() {
            for input in &n.input {
                if let Some(&p) = producer.get(input.as_str()) {
                    flow.add_edge(NodeIndex::new(p), NodeIndex::new(i), ());
                }
            }
        }
        GraphView {
            graph,
            producer,
            consumers,
            initializers: graph
                .initializer
                .iter()
                .map(|t| (t.name.as_str(), t))
                .collect(),
            inputs: graph.input.iter().map(|v| v.name.as_str()).collect(),
            outputs: graph.output.iter().map(|v| v.name.as_str()).collect(),
            flow,
        }
    }

    pub fn node(&self, i: usize) -> &'a NodeProto {
        &self.graph.node[i]
    }

    pub fn producer(&self, tensor: &str) -> Option<usize> {
        self.producer.get(tensor).copied()
    }

    /// The producing node if it has the given op type.
    pub fn producer_op(&self, tensor: &str, op: &str) -> Option<usize> {
        self.producer(tensor)
            .filter(|&p| self.node(p).op_type == op)
    }

    pub fn consumers(&self, tensor: &str) -> &[usize] {
        self.consumers.get(tensor).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The only consumer of a tensor that is not a graph output, with the given op type.
    pub fn sole_consumer_op(&self, tensor: &str, op: &str) -> Option<usize> {
        match self.consumers(tensor) {
            [c] if self.node(*c).op_type == op && !self.is_output(tensor) => Some(*c),
            _ => None,
        }
    }

    pub fn initializer(&self, tensor: &str) -> Option<&'a TensorProto> {
        self.initializers.get(tensor).copied()
    }

    pub fn is_input(&self, tensor: &str) -> bool {
        self.inputs.contains(tensor) && !self.initializers.contains_key(tensor)
    }

    pub fn is_output(&self, tensor: &str) -> bool {
        self.outputs.contains(tensor)
    }

    /// The value of a constant tensor: an initializer or a `Constant` node's output.
    pub fn constant(&self, tensor: &str) -> Option<Vec<f64>> {
        if let Some(t) = self.initializer(tensor) {
            return tensor::values_f64(t);
        }
        let n = self.node(self.producer_op(tensor, "Constant")?);
        n.attribute.iter().find_map(|a| match a.name.as_str() {
            "value" => a.t.as_ref().and_then(tensor::values_f64),
            "value_float" => Some(vec![a.f as f64]),
            "value_floats" => Some(a.floats.iter().map(|&v| v as f64).collect()),
            "value_int" => Some(vec![a.i as f64]),
            "value_ints" => Some(a.ints.iter().map(|&v| v as f64).collect()),
            _ => None,
        })
    }

    /// The value of a one-element constant.
    pub fn scalar(&self, tensor: &str) -> Option<f64> {
        self.constant(tensor).filter(|v| v.len() == 1).map(|v| v[0])
    }

    /// True if the tensor is a one-element constant within `tol` of `value`.
    pub fn is_scalar(&self, tensor: &str, value: f64, tol: f64) -> bool {
        self.scalar(tensor)
            .is_some_and(|v| (v - value).abs() <= tol)
    }

    /// Nodes whose outputs flow into `node` (its backward cone), `node` excluded.
    pub fn ancestors(&self, node: usize) -> Vec<usize> {
        let reversed = Reversed(&self.flow);
        let mut dfs = Dfs::new(reversed, NodeIndex::new(node));
        let mut out = vec![];
        while let Some(n) = dfs.next(reversed) {
            if n.index() != node {
                out.push(n.index());
            }
        }
        out
    }

    /// The petgraph of data flow between nodes (node weights are indices into `graph.node`).
    pub fn flow(&self) -> &DiGraph<usize, ()> {
        &self.flow
    }

    /// The other input of a binary node, given one of them.
    pub fn other_input(&self, node: usize, this: &str) -> Option<&'a str> {
        let n = self.node(node);
        match n.input.as_slice() {
            [a, b] if a == this => Some(b),
            [a, b] if b == this => Some(a),
            _ => None,
        }
    }
}

/// Node replacements and removals by original index, applied in one pass so that the
/// indices every plan holds stay valid until then.
#[derive(Debug, Default)]
pub struct Edits {
    pub replace: std::collections::BTreeMap<usize, NodeProto>,
    pub remove: std::collections::BTreeSet<usize>,
}

impl Edits {
    pub fn apply(self, graph: &mut GraphProto) {
        let old = std::mem::take(&mut graph.node);
        let mut replace = self.replace;
        for (i, n) in old.into_iter().enumerate() {
            if let Some(new) = replace.remove(&i) {
                graph.node.push(new);
            } else if !self.remove.contains(&i) {
                graph.node.push(n);
            }
        }
    }
}
