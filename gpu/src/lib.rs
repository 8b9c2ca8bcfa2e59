//! suf on an NVIDIA GPU: a typed tract model becomes a tract-cuda plan whose SUF nodes run
//! as CUDA kernels where one exists (`translate`), with the placement of every node read
//! back for the report (`placement`).
//!
//! Nothing CUDA is linked: cudarc opens libcuda, NVRTC, cuBLAS and cuDNN when the first cuda
//! plan is built, so this crate builds (and its host-side logic is tested) on machines
//! without a GPU, and `available()` says in one line why a machine cannot run it.

pub mod elementary;
pub mod kernels;
pub mod placement;
pub mod quantize;
pub mod ring;
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

fn build(mut model: TypedModel) -> TractResult<(Arc<TypedSimplePlan>, Placement)> {
    elementary::rewrite(&mut model)?;
    tract_cuda::CudaTransform.transform(&mut model)?;
    let mut model = translate::SufGpuTranslate.translate(&model)?;
    tract_gpu::rewrite_rules::rewire_syncs::rewire_syncs(&mut model)?;
    model.optimize()?;
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
