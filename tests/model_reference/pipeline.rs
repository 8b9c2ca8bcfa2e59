//! suf's pipeline under test: `suf_compiler::compile` at a level, then tract runs the
//! rewritten graph with every SUF node's output (and the reference's tensor names) added
//! as graph outputs. Failures are returned as text, so the report can say where they were.

use crate::ring::Level;
use anyhow::Context;
use std::collections::HashMap;
use suf_compiler::{
    compile, tract_ops, CompileOptions, Emulation, FixedPoint, ModelProto, Rounding,
};
use tract_onnx::prelude::*;

/// A tensor read back from tract.
pub enum Values {
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Other(String),
}

pub struct Read {
    pub shape: Vec<usize>,
    pub values: Values,
}

/// The node that produces a tensor in the compiled graph.
#[derive(Clone)]
pub struct Producer {
    pub node: String,
    pub op: String,
}

impl Producer {
    pub fn is_suf(&self) -> bool {
        self.op.starts_with("Suf")
    }
}

#[derive(Default)]
pub struct Pipeline {
    pub producers: HashMap<String, Producer>,
    /// Outputs of SUF nodes, in graph order.
    pub suf_outputs: Vec<String>,
    pub tensors: HashMap<String, Read>,
    /// Where the pipeline stopped, if it did.
    pub error: Option<String>,
}

fn options(n: u32, level: Level) -> anyhow::Result<CompileOptions> {
    let mut opts = CompileOptions::new(FixedPoint::new(n, 12)?);
    (opts.emulation, opts.rounding) = match level {
        Level::Ring => (Emulation::Ring, Rounding::Round),
        Level::Sigma => (Emulation::Sigma, Rounding::Trunc),
    };
    Ok(opts)
}

/// Compiles `model` and runs it on `inputs` (by input name), reading back the SUF
/// tensors and every name in `wanted` that the compiled graph has.
pub fn run(
    model: &ModelProto,
    n: u32,
    level: Level,
    inputs: &[(String, Tensor)],
    wanted: &[String],
) -> Pipeline {
    let mut p = Pipeline::default();
    let compiled = match options(n, level).and_then(|o| compile(model, &o)) {
        Ok(c) => c.model,
        Err(e) => {
            p.error = Some(format!("compile failed: {e:#}"));
            return p;
        }
    };
    for node in &compiled.graph.as_ref().expect("compiled graph").node {
        for out in &node.output {
            let producer = Producer {
                node: node.name.clone(),
                op: node.op_type.clone(),
            };
            if producer.is_suf() {
                p.suf_outputs.push(out.clone());
            }
            p.producers.insert(out.clone(), producer);
        }
    }
    let mut names: Vec<String> = p.suf_outputs.clone();
    names.extend(
        wanted
            .iter()
            .filter(|w| !names.contains(w))
            .cloned()
            .collect::<Vec<_>>(),
    );
    if let Err(e) = execute(&compiled, inputs, &names, &mut p.tensors) {
        p.error = Some(format!("tract run failed: {e:#}"));
    }
    p
}

fn execute(
    compiled: &ModelProto,
    inputs: &[(String, Tensor)],
    names: &[String],
    out: &mut HashMap<String, Read>,
) -> TractResult<()> {
    let mut m = tract_ops::onnx().model_for_proto_model(compiled)?;
    let input_names: Vec<String> = m
        .input_outlets()?
        .iter()
        .map(|o| m.node(o.node).name.clone())
        .collect();
    let mut feeds = tvec![];
    for (i, name) in input_names.iter().enumerate() {
        let t = &inputs
            .iter()
            .find(|(k, _)| k == name)
            .with_context(|| format!("no value for model input `{name}`"))?
            .1;
        m.set_input_fact(i, InferenceFact::dt_shape(i64::datum_type(), t.shape()))?;
        feeds.push(t.clone().into_tvalue());
    }
    let found: Vec<(String, OutletId)> = names
        .iter()
        .filter_map(|n| m.find_outlet_label(n).map(|o| (n.clone(), o)))
        .collect();
    let outlets: Vec<OutletId> = found.iter().map(|(_, o)| *o).collect();
    m.select_output_outlets(&outlets)?;
    let plan = m.into_optimized()?.into_runnable()?;
    let results = plan.run(feeds)?;
    for ((name, _), t) in found.into_iter().zip(results) {
        let plain = t.try_as_plain_ram()?;
        let values = match t.datum_type() {
            DatumType::I64 => Values::I64(plain.as_slice::<i64>()?.to_vec()),
            DatumType::F32 => Values::F32(plain.as_slice::<f32>()?.to_vec()),
            DatumType::F64 => Values::F64(plain.as_slice::<f64>()?.to_vec()),
            other => Values::Other(format!("{other:?}")),
        };
        out.insert(
            name,
            Read {
                shape: t.shape().to_vec(),
                values,
            },
        );
    }
    Ok(())
}
