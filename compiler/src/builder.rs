//! A small builder of ONNX graphs over the prost types, for tests and tools.

use crate::tensor::{dtype, f32_tensor, i64_tensor};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension::Value as DimValue,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

pub struct GraphBuilder {
    graph: GraphProto,
    opset: i64,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        GraphBuilder {
            graph: GraphProto {
                name: name.into(),
                ..Default::default()
            },
            opset: 17,
        }
    }

    pub fn opset(&mut self, version: i64) -> &mut Self {
        self.opset = version;
        self
    }

    pub fn input_f32(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        self.graph
            .input
            .push(value_info(name, dtype::FLOAT, Some(dims)));
        self
    }

    pub fn input_i64(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        self.graph
            .input
            .push(value_info(name, dtype::INT64, Some(dims)));
        self
    }

    pub fn output(&mut self, name: &str) -> &mut Self {
        self.graph.output.push(value_info(name, dtype::FLOAT, None));
        self
    }

    pub fn init_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> &mut Self {
        self.graph.initializer.push(f32_tensor(name, dims, data));
        self
    }

    pub fn init_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) -> &mut Self {
        self.graph.initializer.push(i64_tensor(name, dims, data));
        self
    }

    /// A float scalar as an initializer (exporters emit Constant nodes; both are handled).
    pub fn scalar(&mut self, name: &str, value: f32) -> &mut Self {
        self.init_f32(name, &[], &[value])
    }

    pub fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str]) -> &mut NodeProto {
        self.node_with(op, inputs, outputs, vec![])
    }

    pub fn node_with(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> &mut NodeProto {
        let name = format!("/{}_{}", op, self.graph.node.len());
        self.graph.node.push(NodeProto {
            name,
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute,
            ..Default::default()
        });
        self.graph.node.last_mut().expect("just pushed")
    }

    pub fn build(&self) -> ModelProto {
        ModelProto {
            ir_version: 8,
            producer_name: "suf-builder".into(),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: self.opset,
            }],
            graph: Some(self.graph.clone()),
            ..Default::default()
        }
    }
}

fn value_info(name: &str, elem_type: i32, dims: Option<&[i64]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|&d| Dimension {
                value: Some(DimValue::DimValue(d)),
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

pub fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

pub fn attr_string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}
