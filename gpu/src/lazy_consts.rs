//! A repair of tract-cuda 0.23.9 plans: a constant that is also a model output (a probed SUF
//! tensor of constants, such as the position embeddings quantized) gets a copy to the host
//! for the output, which tract then folds into a `Const` holding a `LazyHostStorage` under a
//! device fact. Device ops reading that constant fail with `Unexpected tensor storage type`
//! (measured on the H200: BERT, GPT-2 and GPT-Neo graphs with probes). The device ops get a
//! constant of the device tensor itself; the model outputs keep the lazy host one.

use tract_core::dyn_clone::clone_box;
use tract_core::internal::*;
use tract_core::ops::konst::Const;
use tract_gpu::tensor::{DeviceTensorExt, LazyHostStorage};

/// Rewires every non-output consumer of a lazily-hosted device constant to a constant of
/// its device tensor; returns how many constants were repaired.
pub fn repair(model: &mut TypedModel) -> TractResult<usize> {
    let mut repaired = 0;
    for id in 0..model.nodes.len() {
        let Some(konst) = model.node(id).op_as::<Const>() else {
            continue;
        };
        let Some(fact) = konst.exotic_fact() else {
            continue;
        };
        if konst.val().as_device_tensor().is_some() {
            continue;
        }
        let Some(device) = konst
            .val()
            .storage_as::<LazyHostStorage>()
            .and_then(|lazy| lazy.device())
        else {
            continue;
        };
        let device_const = Const::new_with_exotic_fact(
            device.clone().into_tensor().into_arc_tensor(),
            clone_box(fact),
        )?;
        let name = format!("{}.device", model.node(id).name);
        let consumers: Vec<InletId> = model.node(id).outputs[0].successors.to_vec();
        if consumers.is_empty() {
            continue;
        }
        let outlet = model.wire_node(name, device_const, &[])?[0];
        for inlet in consumers {
            model.add_edge(outlet, inlet)?;
        }
        repaired += 1;
    }
    Ok(repaired)
}
