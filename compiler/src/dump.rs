//! Readable dumps of a (rewritten) graph: text for people and diffs, DOT for graphviz,
//! JSON for tools. Node order is the graph's (topological) order, so dumps diff cleanly.

use crate::summary::Summary;
use crate::SUF_DOMAIN;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write;
use std::str::FromStr;
use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    Text,
    Dot,
    Json,
}

impl FromStr for DumpFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(DumpFormat::Text),
            "dot" => Ok(DumpFormat::Dot),
            "json" => Ok(DumpFormat::Json),
            _ => Err(format!(
                "unknown dump format `{s}` (expected text, dot or json)"
            )),
        }
    }
}

pub fn dump(model: &ModelProto, summary: Option<&Summary>, format: DumpFormat) -> Result<String> {
    let Some(graph) = model.graph.as_ref() else {
        bail!("model has no graph")
    };
    Ok(match format {
        DumpFormat::Text => text(graph, summary),
        DumpFormat::Dot => dot(graph),
        DumpFormat::Json => serde_json::to_string_pretty(&json_value(graph, summary))? + "\n",
    })
}

/// Shapes known without running inference: graph inputs/outputs and initializers.
fn known_shapes(graph: &GraphProto) -> HashMap<&str, String> {
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value as D, type_proto::Value};
    let mut shapes = HashMap::new();
    for v in graph.input.iter().chain(&graph.output) {
        if let Some(Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            if let Some(s) = &t.shape {
                let dims: Vec<String> = s
                    .dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(D::DimValue(v)) => v.to_string(),
                        Some(D::DimParam(p)) => p.clone(),
                        None => "?".into(),
                    })
                    .collect();
                shapes.insert(v.name.as_str(), format!("[{}]", dims.join(",")));
            }
        }
    }
    for t in &graph.initializer {
        let dims: Vec<String> = t.dims.iter().map(i64::to_string).collect();
        shapes.insert(t.name.as_str(), format!("[{}]", dims.join(",")));
    }
    shapes
}

fn attr_text(a: &AttributeProto) -> String {
    let value = match AttributeType::try_from(a.r#type).unwrap_or(AttributeType::Undefined) {
        AttributeType::Int => a.i.to_string(),
        AttributeType::Float => a.f.to_string(),
        AttributeType::String => String::from_utf8_lossy(&a.s).into_owned(),
        AttributeType::Ints => format!("{:?}", a.ints),
        AttributeType::Floats => format!("{:?}", a.floats),
        AttributeType::Tensor => "<tensor>".into(),
        _ => "<...>".into(),
    };
    format!("{}={value}", a.name)
}

/// An attribute as a typed JSON value: tools read `"n_bits": 37`, not `"37"`.
fn attr_json(a: &AttributeProto) -> Value {
    match AttributeType::try_from(a.r#type).unwrap_or(AttributeType::Undefined) {
        AttributeType::Int => json!(a.i),
        AttributeType::Float => json!(a.f),
        AttributeType::String => json!(String::from_utf8_lossy(&a.s)),
        AttributeType::Ints => json!(a.ints),
        AttributeType::Floats => json!(a.floats),
        AttributeType::Strings => json!(a
            .strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()),
        AttributeType::Tensor => json!("<tensor>"),
        _ => json!("<...>"),
    }
}

fn text(graph: &GraphProto, summary: Option<&Summary>) -> String {
    let shapes = known_shapes(graph);
    let with_shape = |name: &String| match shapes.get(name.as_str()) {
        Some(s) => format!("{name}{s}"),
        None => name.clone(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "# graph {} ({} nodes)", graph.name, graph.node.len());
    if let Some(s) = summary {
        for line in s.to_string().lines() {
            let _ = writeln!(out, "# {line}");
        }
    }
    for v in &graph.input {
        let _ = writeln!(out, "input  {}", with_shape(&v.name));
    }
    for (i, n) in graph.node.iter().enumerate() {
        let marker = if n.domain == SUF_DOMAIN {
            "SUF "
        } else {
            "    "
        };
        let ins: Vec<String> = n.input.iter().map(with_shape).collect();
        let outs: Vec<String> = n.output.iter().map(with_shape).collect();
        let attrs: Vec<String> = if n.domain == SUF_DOMAIN || n.attribute.len() <= 4 {
            n.attribute
                .iter()
                .filter(|a| a.name != "value")
                .map(attr_text)
                .collect()
        } else {
            vec![format!("{} attributes", n.attribute.len())]
        };
        let _ = writeln!(
            out,
            "{marker}{i:>5} {:<18} {:<40} ({}) -> ({}){}",
            n.op_type,
            n.name,
            ins.join(", "),
            outs.join(", "),
            if attrs.is_empty() {
                String::new()
            } else {
                format!("  {{{}}}", attrs.join(" "))
            }
        );
    }
    for v in &graph.output {
        let _ = writeln!(out, "output {}", with_shape(&v.name));
    }
    out
}

fn dot(graph: &GraphProto) -> String {
    let mut out = String::from("digraph suf {\n  rankdir=TB;\n  node [shape=box, fontsize=10];\n");
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        let style = if n.domain == SUF_DOMAIN {
            ", style=filled, fillcolor=\"#ffd27f\""
        } else if n.op_type == "Constant" {
            ", shape=plaintext"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  n{i} [label=\"{}\\n{}\"{style}];",
            n.op_type,
            escape(&n.name)
        );
        for o in &n.output {
            producer.insert(o, i);
        }
    }
    for v in &graph.input {
        let _ = writeln!(
            out,
            "  \"in:{0}\" [label=\"{0}\", shape=ellipse];",
            escape(&v.name)
        );
    }
    for (i, n) in graph.node.iter().enumerate() {
        for input in &n.input {
            if let Some(p) = producer.get(input.as_str()) {
                let _ = writeln!(out, "  n{p} -> n{i};");
            } else if graph.input.iter().any(|v| v.name == *input) {
                let _ = writeln!(out, "  \"in:{}\" -> n{i};", escape(input));
            }
        }
    }
    out.push_str("}\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn json_value(graph: &GraphProto, summary: Option<&Summary>) -> Value {
    let nodes: Vec<Value> = graph
        .node
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let attrs: serde_json::Map<String, Value> = n
                .attribute
                .iter()
                .filter(|a| a.name != "value")
                .map(|a| (a.name.clone(), attr_json(a)))
                .collect();
            json!({
                "index": i, "name": n.name, "op": n.op_type,
                "domain": if n.domain.is_empty() { "ai.onnx" } else { n.domain.as_str() },
                "suf": n.domain == SUF_DOMAIN,
                "inputs": n.input, "outputs": n.output, "attributes": attrs,
            })
        })
        .collect();
    json!({
        "graph": graph.name,
        "inputs": graph.input.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
        "outputs": graph.output.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
        "summary": summary,
        "nodes": nodes,
    })
}
