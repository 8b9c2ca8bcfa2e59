//! suf on an NVIDIA GPU: a typed tract model becomes a tract-cuda plan whose SUF nodes run
//! as CUDA kernels where one exists (`translate`), with the placement of every node read
//! back for the report (`placement`).
//!
//! Nothing CUDA is linked: cudarc opens libcuda, NVRTC, cuBLAS and cuDNN when the first cuda
//! plan is built, so this crate builds (and its host-side logic is tested) on machines
//! without a GPU, and `available()` says in one line why a machine cannot run it.

pub mod dgemm;
pub mod elementary;
pub mod kernels;
pub mod lazy_consts;
pub mod placement;
pub mod quantize;
pub mod ring;
pub mod ring_fn;
pub mod ring_fn_kernels;
pub mod row_kernels;
pub mod sigma;
pub mod sigma_row;
pub mod translate;

use std::sync::Arc;

use anyhow::{anyhow, Result};
use tract_core::internal::*;
use tract_core::transform::ModelTransform;

pub use placement::Placement;

/// Checks that a CUDA driver, a GPU and the CUDA libraries tract-cuda loads are present.
pub fn available() -> Result<()> {
    // tract-cuda panics on a missing device when its context is first made: probe first.
    let probe = std::panic::catch_unwind(|| {
        tract_cuda::utils::ensure_cuda_runtime_dependencies("CUDA runtime not usable")
    });
    match probe {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow!("--device cuda: no usable NVIDIA GPU: {e:#}")),
        Err(_) => Err(anyhow!(
            "--device cuda: no usable NVIDIA GPU: the CUDA driver probe failed"
        )),
    }
}

/// An optimised typed model as a cuda plan, and where its nodes run.
pub fn prepare(model: TypedModel) -> Result<(Arc<TypedSimplePlan>, Placement)> {
    available()?;
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(model)));
    match built {
        Ok(r) => r.map_err(|e| anyhow!("tract-cuda cannot prepare the graph: {e:#}")),
        Err(p) => Err(anyhow!(
            "tract-cuda panicked while preparing the graph: {}",
            suf_compiler::panic_guard::payload_text(p.as_ref())
        )),
    }
}

/// `SUF_GPU_DUMP_DIR`: every stage of the cuda plan's model as text (node, op, inputs,
/// output facts), for tracing a placement or a failing kernel input on the GPU machine.
fn dump(model: &TypedModel, stage: &str) {
    let Some(dir) = std::env::var_os("SUF_GPU_DUMP_DIR") else {
        return;
    };
    let mut text = String::new();
    for node in &model.nodes {
        let facts: Vec<String> = node
            .outputs
            .iter()
            .map(|o| format!("{:?}", o.fact))
            .collect();
        let inputs: Vec<String> = node
            .inputs
            .iter()
            .map(|i| format!("{}/{}", i.node, i.slot))
            .collect();
        text += &format!(
            "{} {:?} {} in=[{}] out=[{}]\n",
            node.id,
            node.name,
            node.op.name(),
            inputs.join(","),
            facts.join(" ; ")
        );
    }
    text += &format!("outputs {:?}\n", model.outputs);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = std::path::Path::new(&dir).join(format!("{stamp}-{stage}.txt"));
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("SUF_GPU_DUMP_DIR: cannot write {}: {e}", path.display());
    }
}

fn build(mut model: TypedModel) -> TractResult<(Arc<TypedSimplePlan>, Placement)> {
    elementary::rewrite(&mut model)?;
    tract_cuda::CudaTransform.transform(&mut model)?;
    lazy_consts::repair(&mut model)?;
    dump(&model, "1-cuda-transform");
    let mut model = translate::SufGpuTranslate.translate(&model)?;
    tract_gpu::rewrite_rules::rewire_syncs::rewire_syncs(&mut model)?;
    dump(&model, "2-suf-translate");
    // Diagnosis switch (SUF_GPU_NO_OPTIMIZE=1): plan the translated model as it is.
    if std::env::var_os("SUF_GPU_NO_OPTIMIZE").is_none() {
        model.optimize()?;
        lazy_consts::repair(&mut model)?;
    }
    dump(&model, "3-optimized");
    let placement = Placement::of(&model)?;
    // As tract-cuda's own runtime: the simple order, device memory from the turn handler.
    let options = RunOptions {
        skip_order_opt_ram: true,
        ..Default::default()
    };
    let mut plan = TypedSimplePlan::build(model, &options)?;
    if let Some(handler) = tract_gpu::turn_handler::DeviceTurnHandler::for_plan(&plan, None)? {
        plan = plan.with_turn_handler(handler);
    }
    // Constants were uploaded asynchronously on this thread's stream; other threads' streams
    // read them, so the uploads must be finished first.
    tract_gpu::device::get_context()?.synchronize()?;
    Ok((Arc::new(plan), placement))
}
