//! SUF nodes as tract ops, so rewritten models run in tract.
//!
//! tract's ONNX op registry is keyed by op type alone (the domain is ignored), hence the
//! `Suf` prefix. The arithmetic is `suf_fixed`'s: this module only adapts it to tensors.

use crate::SUF_QUANTIZE;
use suf_fixed::{FixedPoint, Rounding};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::element_wise::ElementWiseMiniOp;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_hir::ops::expandable::expand;

/// tract's ONNX framework with the SUF ops registered. Use it for original and rewritten
/// models alike (it is a superset of `tract_onnx::onnx()`).
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert(SUF_QUANTIZE, suf_quantize);
    onnx
}

/// The fused encode + wrap + decode of emulation level `output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SufQuantize {
    pub node: String,
    pub fixed: FixedPoint,
    pub rounding: Rounding,
}

impl SufQuantize {
    /// Parses the attributes `suf-compile` writes (see `pass::suf_attributes`).
    pub fn from_node(node: &NodeProto) -> TractResult<Self> {
        let int = |name: &str| -> TractResult<i64> {
            node.attribute
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.i)
                .with_context(|| format!("SUF node {}: missing attribute {name}", node.name))
        };
        let n_bits = u32::try_from(int("n_bits")?)?;
        let frac_bits = u32::try_from(int("frac_bits")?)?;
        let fixed = FixedPoint::new(n_bits, frac_bits)
            .map_err(|e| anyhow!("SUF node {}: {e}", node.name))?;
        let rounding = node
            .attribute
            .iter()
            .find(|a| a.name == "rounding")
            .map(|a| String::from_utf8_lossy(&a.s).parse::<Rounding>())
            .transpose()
            .map_err(|e| anyhow!("SUF node {}: {e}", node.name))?
            .unwrap_or_default();
        if let Some(e) = node.attribute.iter().find(|a| a.name == "emulation") {
            let level = String::from_utf8_lossy(&e.s);
            if level != "output" {
                bail!(
                    "SUF node {}: emulation `{level}` has no tract op yet",
                    node.name
                );
            }
        }
        Ok(SufQuantize {
            node: node.name.clone(),
            fixed,
            rounding,
        })
    }
}

impl ElementWiseMiniOp for SufQuantize {
    fn name(&self) -> String {
        SUF_QUANTIZE.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "n_bits={} frac_bits={} rounding={}",
            self.fixed.n_bits(),
            self.fixed.frac_bits(),
            self.rounding
        )])
    }

    fn eval_in_place(&self, t: &mut Tensor, _out_dt: Option<DatumType>) -> TractResult<()> {
        match t.datum_type() {
            DatumType::F32 => self
                .fixed
                .quantize_slice_f32(
                    t.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
                    self.rounding,
                )
                .map_err(|e| {
                    anyhow!(
                        "SUF node {}: {e} (the fixed-point input must be finite)",
                        self.node
                    )
                }),
            DatumType::F64 => {
                let mut plain = t.try_as_plain_ram_mut()?;
                for x in plain.as_slice_mut::<f64>()? {
                    *x = self
                        .fixed
                        .quantize(*x, self.rounding)
                        .map_err(|e| anyhow!("SUF node {}: {e}", self.node))?;
                }
                Ok(())
            }
            dt => bail!("SUF node {}: expects float input, got {dt:?}", self.node),
        }
    }

    fn eval_out_of_place(&self, t: &Tensor, out_dt: Option<DatumType>) -> TractResult<Tensor> {
        let mut t = t.clone();
        self.eval_in_place(&mut t, out_dt)?;
        Ok(t)
    }
}

fn suf_quantize(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let op = SufQuantize::from_node(node)?;
    Ok((expand(ElementWiseOp(Box::new(op))), vec![]))
}
