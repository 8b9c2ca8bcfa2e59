//! Float ops tract-cuda 0.23.9 has no kernel for, rewritten into ops it has, before the CUDA
//! transform: otherwise each stays on the CPU with a copy each way per run (measured: 50 to
//! 640 ms per batch for BERT's erf GELU and GPT-2's x^3). Float graphs only change by float
//! rounding; the SUF ops never see these (levels ring and sigma replace the GELU whole).

use tract_core::internal::*;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::math::{add, mul, Erf, PowConst};
use tract_core::ops::nn::GeluExact;

fn scalar(
    patch: &mut TypedModelPatch,
    name: String,
    value: f32,
    rank: usize,
) -> TractResult<OutletId> {
    patch.add_const(
        name,
        tensor0(value).broadcast_into_rank(rank)?.into_arc_tensor(),
    )
}

/// GeluExact(x) = (x * 0.5) * (erf(x * 1/sqrt(2)) + 1), in the order tract's own kernel uses.
fn gelu_exact(model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
    let Some(ew) = node.op_as::<ElementWiseOp>() else {
        return Ok(None);
    };
    if !ew.0.is::<GeluExact>() {
        return Ok(None);
    }
    let fact = model.outlet_fact(node.inputs[0])?.clone();
    if fact.datum_type != DatumType::F32 {
        return Ok(None);
    }
    let (name, rank) = (&node.name, fact.rank());
    let mut patch = TypedModelPatch::default();
    let x = patch.tap_model(model, node.inputs[0])?;
    let c = scalar(
        &mut patch,
        format!("{name}.inv_sqrt2"),
        2f32.sqrt().recip(),
        rank,
    )?;
    let half = scalar(&mut patch, format!("{name}.half"), 0.5, rank)?;
    let one = scalar(&mut patch, format!("{name}.one"), 1.0, rank)?;
    let scaled = patch.wire_node(format!("{name}.scaled"), mul(), &[x, c])?[0];
    let erf = patch.wire_node(
        format!("{name}.erf"),
        ElementWiseOp(Box::new(Erf {}), None),
        &[scaled],
    )?[0];
    let erf1 = patch.wire_node(format!("{name}.erf1"), add(), &[erf, one])?[0];
    let xh = patch.wire_node(format!("{name}.xhalf"), mul(), &[x, half])?[0];
    let y = patch.wire_node(format!("{name}.gelu"), mul(), &[xh, erf1])?[0];
    patch.shunt_outside(model, node.id.into(), y)?;
    Ok(Some(patch))
}

/// x^2 and x^3 (gelu_new's cube) as products.
fn small_power(model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
    let Some(ew) = node.op_as::<ElementWiseOp>() else {
        return Ok(None);
    };
    let Some(pow) = ew.0.downcast_ref::<PowConst>() else {
        return Ok(None);
    };
    if model.outlet_fact(node.inputs[0])?.datum_type != DatumType::F32
        || !(pow.exponent == 2.0 || pow.exponent == 3.0)
    {
        return Ok(None);
    }
    let name = &node.name;
    let mut patch = TypedModelPatch::default();
    let x = patch.tap_model(model, node.inputs[0])?;
    let mut y = patch.wire_node(format!("{name}.sq"), mul(), &[x, x])?[0];
    if pow.exponent == 3.0 {
        y = patch.wire_node(format!("{name}.cube"), mul(), &[y, x])?[0];
    }
    patch.shunt_outside(model, node.id.into(), y)?;
    Ok(Some(patch))
}

/// Applies both rewrites everywhere.
pub fn rewrite(model: &mut TypedModel) -> TractResult<()> {
    Rewriter::default()
        .with_rule_for(
            "suf-gelu-exact-to-erf",
            |_: &(), m, n, _: &str, _: &ElementWiseOp| gelu_exact(m, n),
        )
        .with_rule_for(
            "suf-small-power-to-mul",
            |_: &(), m, n, _: &str, _: &ElementWiseOp| small_power(m, n),
        )
        .rewrite(&(), model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_op(op: ElementWiseOp) -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([2, 3])).unwrap();
        let y = m.wire_node("op", op, &[x]).unwrap();
        m.select_output_outlets(&y).unwrap();
        m
    }

    fn run(m: TypedModel, xs: &[f32]) -> Vec<f32> {
        let plan = m.into_runnable().unwrap();
        let out = plan
            .run(tvec!(Tensor::from_shape(&[2, 3], xs)
                .unwrap()
                .into_tvalue()))
            .unwrap();
        out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    fn op_names(m: &TypedModel) -> Vec<String> {
        m.nodes().iter().map(|n| n.op.name().to_string()).collect()
    }

    #[test]
    fn gelu_exact_becomes_erf_and_products_with_the_same_values() {
        let xs = [-3.0f32, -1.0, -0.1, 0.0, 0.7, 2.5];
        let original = one_op(ElementWiseOp(Box::new(GeluExact {}), None));
        let mut rewritten = original.clone();
        rewrite(&mut rewritten).unwrap();
        let names = op_names(&rewritten);
        assert!(names.iter().all(|n| n != "GeluExact"), "{names:?}");
        assert!(names.iter().any(|n| n == "Erf"), "{names:?}");
        let (a, b) = (run(original, &xs), run(rewritten, &xs));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn a_cube_becomes_two_products_and_other_powers_stay() {
        let xs = [-3.0f32, -1.0, -0.1, 0.0, 0.7, 2.5];
        let original = one_op(ElementWiseOp(Box::new(PowConst { exponent: 3.0 }), None));
        let mut rewritten = original.clone();
        rewrite(&mut rewritten).unwrap();
        assert!(!op_names(&rewritten).iter().any(|n| n.contains("PowConst")));
        let (a, b) = (run(original, &xs), run(rewritten, &xs));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{a:?} vs {b:?}");
        }
        let mut half = one_op(ElementWiseOp(Box::new(PowConst { exponent: 0.5 }), None));
        rewrite(&mut half).unwrap();
        assert!(op_names(&half).iter().any(|n| n.contains("PowConst")));
    }
}
