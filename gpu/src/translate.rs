//! The second translation of a cuda plan: tract-cuda has placed every op it knows on the
//! device and left the SUF ops on the CPU between copies; this pass puts the SUF ops that
//! have a kernel on the device too, adding the copies the new placement needs. tract-gpu's
//! `rewire_syncs` then removes the copy pairs (to host, straight back) that it leaves.

use std::collections::HashMap;

use suf_compiler::tract_ops::{
    BinaryKind, SufEncode, SufNonlinear, SufQuantize, SufQuantizeBias, SufRingBinary,
    SufRingDecode, SufRingMatMul,
};
use tract_core::internal::*;
use tract_core::model::translator::Translate;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_gpu::fact::DeviceTypedFactExt;
use tract_gpu::ops::change_axes::GpuAxisOp;
use tract_gpu::sync::{DeviceSync, DeviceSyncKind};

use crate::kernels::MAX_RANK;
use crate::quantize::GpuSufQuantize;
use crate::ring::{GpuSufEncode, GpuSufRingBinary, GpuSufRingDecode, GpuSufRingMatMul};
use crate::ring_fn::GpuSufRingFunction;
use crate::sigma::GpuSufSigmaActivation;
use crate::sigma_row::GpuSufSigmaRow;

/// The device op for a node, when one exists for its op and input types.
pub fn gpu_op_for(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Box<dyn TypedOp>>> {
    let facts = model.node_input_facts(node.id)?;
    // A SUF node of constants only (position embeddings gathered at constant positions,
    // quantized) stays on the CPU, where tract folds it into a constant once, instead of a
    // kernel per run. (The `CudaAdd: Unexpected tensor storage type` failure with probes,
    // first suspected here, came from tract-cuda's lazily hosted constants: lazy_consts.rs.)
    let constant = |input: &OutletId| -> TractResult<bool> {
        let mut outlet = *input;
        let producer = model.node(outlet.node);
        if plain_sync(producer) == Some(DeviceSyncKind::ToHost) {
            outlet = producer.inputs[0];
        }
        Ok(model.outlet_fact(outlet)?.konst.is_some()
            || model
                .node(outlet.node)
                .op_is::<tract_core::ops::konst::Const>())
    };
    let mut all_constant = !node.inputs.is_empty();
    for input in &node.inputs {
        all_constant &= constant(input)?;
    }
    if all_constant {
        return Ok(None);
    }
    let all_f32 = facts.iter().all(|f| f.datum_type == DatumType::F32);
    if let Some(ew) = node.op_as::<ElementWiseOp>() {
        if let Some(q) = ew.0.downcast_ref::<SufQuantize>() {
            if all_f32 && facts.len() == 1 {
                return Ok(Some(Box::new(GpuSufQuantize {
                    quantize: q.clone(),
                    bias: false,
                })));
            }
        }
    }
    if let Some(qb) = node.op_as::<SufQuantizeBias>() {
        if all_f32 && facts.len() == 2 {
            return Ok(Some(Box::new(GpuSufQuantize {
                quantize: qb.0.clone(),
                bias: true,
            })));
        }
    }
    // Levels ring and sigma: i64 ring tensors, f32 operands encoded on the device.
    let ring_or_f32 = facts
        .iter()
        .all(|f| matches!(f.datum_type, DatumType::I64 | DatumType::F32) && f.rank() <= MAX_RANK);
    if !ring_or_f32 {
        return Ok(None);
    }
    let dt = |ix: usize| facts.get(ix).map(|f| f.datum_type);
    if let Some(op) = node.op_as::<SufEncode>() {
        if dt(0) == Some(DatumType::F32) {
            return Ok(Some(Box::new(GpuSufEncode(op.clone()))));
        }
    }
    if let Some(op) = node.op_as::<SufRingDecode>() {
        if dt(0) == Some(DatumType::I64) {
            return Ok(Some(Box::new(GpuSufRingDecode(op.clone()))));
        }
    }
    if let Some(op) = node.op_as::<SufRingBinary>() {
        if op.kind != BinaryKind::MulReciprocal && facts.len() == 2 {
            return Ok(Some(Box::new(GpuSufRingBinary(op.clone()))));
        }
    }
    if let Some(op) = node.op_as::<SufNonlinear>() {
        if facts.len() == 1 {
            if let Some(gpu) = GpuSufSigmaActivation::new(op)? {
                return Ok(Some(Box::new(gpu)));
            }
        }
        if let Some(gpu) = GpuSufSigmaRow::new(op, &facts)? {
            return Ok(Some(Box::new(gpu)));
        }
        if let Some(gpu) = GpuSufRingFunction::new(op, &facts)? {
            return Ok(Some(Box::new(gpu)));
        }
    }
    if let Some(op) = node.op_as::<SufRingMatMul>() {
        let concrete = facts.iter().all(|f| f.shape.as_concrete().is_some());
        let float_bias = facts.len() < 3 || dt(2) == Some(DatumType::F32);
        if concrete && float_bias && (2..=3).contains(&facts.len()) {
            return Ok(Some(Box::new(GpuSufRingMatMul(op.clone()))));
        }
    }
    Ok(None)
}

/// The copy a node stands for: a DeviceSync, bare or inside tract-cuda's axis-op fusion
/// wrapper with no axis op of its own (`fuse_axis_op` wraps the copies it passes).
pub fn plain_sync(node: &TypedNode) -> Option<DeviceSyncKind> {
    if let Some(sync) = node.op_as::<DeviceSync>() {
        return Some(sync.kind);
    }
    let fused = node.op_as::<tract_cuda::ops::CudaFusedAxisOp>()?;
    if fused.grouped_axis_ops.iter().any(|ops| !ops.is_empty()) {
        return None;
    }
    fused.op.downcast_ref::<DeviceSync>().map(|s| s.kind)
}

/// A copy to the host that tract-cuda fused with reshapes of its input (`fuse_axis_op` fuses
/// Add, Rm and Reshape into a copy, never a Move): the reshapes, which keep a tensor
/// contiguous, as the SUF kernels need.
fn fused_to_host(node: &TypedNode) -> Option<&TVec<GpuAxisOp>> {
    let fused = node.op_as::<tract_cuda::ops::CudaFusedAxisOp>()?;
    let sync = fused.op.downcast_ref::<DeviceSync>()?;
    let ops = fused.grouped_axis_ops.first()?;
    let reshapes = ops.iter().all(|o| {
        matches!(
            o.inner,
            AxisOp::Add(_) | AxisOp::Rm(_) | AxisOp::Reshape(..)
        )
    });
    (sync.kind == DeviceSyncKind::ToHost && fused.grouped_axis_ops.len() == 1 && reshapes)
        .then_some(ops)
}

#[derive(Debug, Default)]
pub struct SufGpuTranslate;

fn on_device(fact: &TypedFact) -> bool {
    fact.as_device_fact().is_some()
}

impl SufGpuTranslate {
    /// Maps the node's inputs, adding a copy of `kind` where an input is not where the node
    /// reads it.
    fn wire_inputs(
        node: &TypedNode,
        target: &mut TypedModel,
        mapping: &HashMap<OutletId, OutletId>,
        wants_device: impl Fn(usize) -> TractResult<bool>,
    ) -> TractResult<TVec<OutletId>> {
        let mut inputs = tvec![];
        for (ix, input) in node.inputs.iter().enumerate() {
            let mapped = mapping[input];
            let is_device = on_device(target.outlet_fact(mapped)?);
            let want = wants_device(ix)?;
            let outlet = if want && !is_device {
                target.wire_node(
                    format!("{}.suf-to-device-{ix}", node.name),
                    DeviceSync::new(DeviceSyncKind::ToDevice),
                    &[mapped],
                )?[0]
            } else if !want && is_device {
                target.wire_node(
                    format!("{}.suf-to-host-{ix}", node.name),
                    DeviceSync::new(DeviceSyncKind::ToHost),
                    &[mapped],
                )?[0]
            } else {
                mapped
            };
            inputs.push(outlet);
        }
        Ok(inputs)
    }

    /// Translates the model and brings every output that is now on the device back to the
    /// host, where the runner reads it.
    pub fn translate(&self, source: &TypedModel) -> TractResult<TypedModel> {
        let mut target = self.translate_model(source)?;
        for ix in 0..target.outputs.len() {
            let outlet = target.outputs[ix];
            let source_fact = source.outlet_fact(source.outputs[ix])?;
            if on_device(target.outlet_fact(outlet)?) && !on_device(source_fact) {
                let label = target.outlet_label(outlet).map(str::to_string);
                let synced = target.wire_node(
                    format!("suf-output-{ix}.to-host"),
                    DeviceSync::new(DeviceSyncKind::ToHost),
                    &[outlet],
                )?[0];
                if let Some(label) = label {
                    target.set_outlet_label(synced, label)?;
                }
                target.outputs[ix] = synced;
            }
        }
        Ok(target)
    }
}

impl Translate<TypedFact, Box<dyn TypedOp>, TypedFact, Box<dyn TypedOp>> for SufGpuTranslate {
    fn translate_node(
        &self,
        source: &TypedModel,
        node: &TypedNode,
        target: &mut TypedModel,
        mapping: &HashMap<OutletId, OutletId>,
    ) -> TractResult<TVec<OutletId>> {
        if let Some(op) = gpu_op_for(source, node)? {
            // An input that tract-cuda copied to the host for the CPU op is read where it
            // was, on the device: no copy there and back. Reshapes fused into the copy are
            // fused into the SUF op instead (tract-cuda applies them to its device inputs).
            let mut bypassed = node.clone();
            let mut reshapes: TVec<TVec<GpuAxisOp>> = tvec![];
            for input in bypassed.inputs.iter_mut() {
                let producer = source.node(input.node);
                let mut fused = tvec![];
                if plain_sync(producer) == Some(DeviceSyncKind::ToHost) {
                    *input = producer.inputs[0];
                } else if let Some(ops) = fused_to_host(producer) {
                    fused = ops.clone();
                    *input = producer.inputs[0];
                }
                reshapes.push(fused);
            }
            let inputs = Self::wire_inputs(&bypassed, target, mapping, |_| Ok(true))?;
            if reshapes.iter().all(|r| r.is_empty()) {
                return target.wire_node(&node.name, op, &inputs);
            }
            let fused = tract_cuda::ops::CudaFusedAxisOp {
                grouped_axis_ops: reshapes,
                op,
            };
            return target.wire_node(&node.name, fused, &inputs);
        }
        // A copy to the device of what is now already there is no copy.
        if plain_sync(node) == Some(DeviceSyncKind::ToDevice) {
            let mapped = mapping[&node.inputs[0]];
            if on_device(target.outlet_fact(mapped)?) {
                return Ok(tvec![mapped]);
            }
        }
        // Every other node reads its inputs where it read them before this pass: a CPU op
        // (or a copy to the device) whose producer moved to the device gets a copy back.
        let inputs = Self::wire_inputs(node, target, mapping, |ix| {
            Ok(on_device(source.outlet_fact(node.inputs[ix])?))
        })?;
        target.wire_node(&node.name, node.op.clone(), &inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use suf_compiler::{FixedPoint, Rounding};

    fn quantize() -> ElementWiseOp {
        ElementWiseOp(
            Box::new(SufQuantize {
                node: "q".into(),
                fixed: FixedPoint::new(37, 12).unwrap(),
                rounding: Rounding::Round,
            }),
            None,
        )
    }

    #[test]
    fn a_suf_node_of_data_goes_to_the_gpu_one_of_constants_stays() {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([4])).unwrap();
        let k = m.add_const("k", tensor1(&[1f32, 2., 3., 4.])).unwrap();
        let on_data = m.wire_node("on_data", quantize(), &[x]).unwrap();
        let on_const = m.wire_node("on_const", quantize(), &[k]).unwrap();
        let node = |o: &TVec<OutletId>| m.node(o[0].node);
        assert!(gpu_op_for(&m, node(&on_data)).unwrap().is_some());
        assert!(gpu_op_for(&m, node(&on_const)).unwrap().is_none());
    }
}
