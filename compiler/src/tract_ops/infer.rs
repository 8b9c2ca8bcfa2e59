//! The inference-time face shared by the SUF ops: the output's type and shape rule, then
//! the typed op itself.

use tract_onnx::tract_core::broadcast::multi_broadcast;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::Expansion;

/// How an op's output shape follows from its inputs.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum ShapeRule {
    /// The first input's shape.
    SameAsFirst,
    /// Numpy broadcasting of the first two inputs.
    Broadcast,
}

/// A typed SUF op with its output type and shape rule.
#[derive(Debug, Clone)]
pub(crate) struct Infer<T> {
    pub op: T,
    pub name: &'static str,
    pub output: DatumType,
    pub shape: ShapeRule,
    pub inputs: std::ops::RangeInclusive<usize>,
}

impl<T: TypedOp + Clone> Infer<T> {
    /// The parser's answer for a one-input op whose output has its input's shape.
    pub fn unary(
        op: T,
        name: &'static str,
        output: DatumType,
    ) -> (Box<dyn InferenceOp>, Vec<String>) {
        let infer = Infer {
            op,
            name,
            output,
            shape: ShapeRule::SameAsFirst,
            inputs: 1..=1,
        };
        (
            tract_onnx::tract_hir::ops::expandable::expand(infer),
            vec![],
        )
    }
}

impl<T: TypedOp + Clone> Expansion for Infer<T> {
    fn name(&self) -> StaticName {
        self.name.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        ensure!(
            self.inputs.contains(&inputs.len()),
            "{} takes {:?} inputs, got {}",
            self.name,
            self.inputs,
            inputs.len()
        );
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, self.output)?;
        match self.shape {
            ShapeRule::SameAsFirst => s.equals(&outputs[0].shape, &inputs[0].shape)?,
            ShapeRule::Broadcast => {
                s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, a, b| {
                    s.equals(&outputs[0].shape, multi_broadcast(&[a, b])?)
                })?
            }
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.op.clone(), inputs)
    }
}
