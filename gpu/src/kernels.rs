//! The SUF kernels (suf.cu): compiled once per process by NVRTC, launched on tract-cuda's
//! stream of the calling thread, so they order with tract's own kernels.

use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cudarc::driver::{CudaFunction, CudaModule, LaunchConfig, PushKernelArg};
use suf_fixed::Rounding;
use tract_cuda::kernels::{get_cuda_view, get_cuda_view_mut};
use tract_gpu::tensor::DeviceTensor;

const SOURCE: &str = include_str!("suf.cu");

/// Threads per block; the kernels fold their scans per warp, so a multiple of 32.
const BLOCK: u32 = 256;
/// Blocks at most: the kernels stride over larger tensors.
const MAX_GRID: u64 = 4096;

static MODULE: OnceLock<std::result::Result<Arc<CudaModule>, String>> = OnceLock::new();

fn module() -> Result<Arc<CudaModule>> {
    MODULE
        .get_or_init(|| {
            let options = cudarc::nvrtc::CompileOptions {
                // Part of the contract: no contraction of a*b+c, so every operation rounds
                // as the CPU's does (see suf.cu).
                fmad: Some(false),
                name: Some("suf.cu".into()),
                ..Default::default()
            };
            let ptx = cudarc::nvrtc::compile_ptx_with_opts(SOURCE, options)
                .map_err(|e| format!("NVRTC cannot compile the SUF kernels: {e}"))?;
            tract_cuda::with_cuda_stream(|stream| Ok(stream.context().load_module(ptx)?))
                .map_err(|e| format!("cannot load the SUF kernels: {e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn function(name: &str) -> Result<CudaFunction> {
    module()?
        .load_function(name)
        .with_context(|| format!("SUF kernel {name} not found"))
}

/// suf.cu's code for a rounding rule.
fn rule_code(rounding: Rounding) -> i32 {
    match rounding {
        Rounding::Round => 0,
        Rounding::Trunc => 1,
        Rounding::Floor => 2,
    }
}

/// What a kernel's scan saw (suf.cu's status block).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Status {
    /// The smallest flat index of a non-finite input, if any.
    pub non_finite_at: Option<u64>,
    /// The largest |x| scanned.
    pub max_abs: f64,
    /// Values with |x| >= the bound (they wrapped).
    pub overflows: u64,
}

impl Status {
    fn from_words(words: &[u64]) -> Result<Self> {
        ensure!(words.len() >= 3, "status block of {} words", words.len());
        Ok(Status {
            non_finite_at: (words[0] != u64::MAX).then_some(words[0]),
            max_abs: f64::from_bits(words[1]),
            overflows: words[2],
        })
    }
}

fn contiguous(t: &DeviceTensor, what: &str) -> Result<()> {
    let natural = tract_core::internal::natural_strides(t.shape());
    ensure!(
        t.strides() == natural.as_slice(),
        "{what}: the SUF kernels read contiguous tensors, got strides {:?} for shape {:?}",
        t.strides(),
        t.shape()
    );
    Ok(())
}

fn grid(len: u64) -> LaunchConfig {
    let blocks = len.div_ceil(BLOCK as u64).clamp(1, MAX_GRID) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The fixed-point parameters every quantize kernel takes.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    pub n_bits: u32,
    pub frac_bits: u32,
    pub rounding: Rounding,
}

impl Grid {
    fn scale(self) -> f64 {
        (self.frac_bits as f64).exp2()
    }
    fn bound(self) -> f64 {
        ((self.n_bits as i32 - 1 - self.frac_bits as i32) as f64).exp2()
    }
}

/// y = quantize(x) (+ bias per last-axis column, then quantize again) on f32 tensors.
pub fn quantize_f32(
    grid_: Grid,
    x: &DeviceTensor,
    bias: Option<&DeviceTensor>,
    y: &DeviceTensor,
) -> Result<Status> {
    contiguous(x, "quantize input")?;
    contiguous(y, "quantize output")?;
    ensure!(
        x.len() == y.len(),
        "quantize: {} inputs for {} outputs",
        x.len(),
        y.len()
    );
    let len = x.len() as u64;
    let (scale, bound) = (grid_.scale(), grid_.bound());
    let inv_scale = 1.0 / scale;
    let (rule, n) = (rule_code(grid_.rounding), grid_.n_bits as i32);
    let func = function(if bias.is_some() {
        "suf_quantize_bias_f32"
    } else {
        "suf_quantize_f32"
    })?;
    tract_cuda::with_cuda_stream(|stream| {
        let status = stream.clone_htod(&[u64::MAX, 0, 0, 0])?;
        let xv = get_cuda_view(x);
        let mut yv = get_cuda_view_mut(y);
        let mut launch = stream.launch_builder(&func);
        launch.arg(&xv);
        let bias_view;
        let c;
        if let Some(b) = bias {
            contiguous(b, "quantize bias")?;
            c = b.len() as u64;
            let last = x.shape().last().copied().unwrap_or(1) as u64;
            if c != last {
                bail!("quantize: bias of {c} for rows of {last}");
            }
            bias_view = get_cuda_view(b);
            launch.arg(&bias_view);
        } else {
            c = 0;
        }
        launch.arg(&mut yv);
        launch.arg(&len);
        if bias.is_some() {
            launch.arg(&c);
        }
        launch
            .arg(&scale)
            .arg(&inv_scale)
            .arg(&rule)
            .arg(&n)
            .arg(&bound)
            .arg(&status);
        // SAFETY: the arguments match suf.cu's signature in order and type; the views cover
        // `len` elements of x and y (checked above) and c of the bias.
        unsafe { launch.launch(grid(len)) }?;
        let words = stream.clone_dtoh(&status)?;
        Status::from_words(&words)
    })
    .map_err(|e| anyhow!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_the_kernels_layout() {
        let s = Status::from_words(&[u64::MAX, 2.5f64.to_bits(), 3, 0]).unwrap();
        assert_eq!(
            s,
            Status {
                non_finite_at: None,
                max_abs: 2.5,
                overflows: 3
            }
        );
        let s = Status::from_words(&[7, 0, 0, 0]).unwrap();
        assert_eq!(s.non_finite_at, Some(7));
    }

    #[test]
    fn rounding_codes_match_the_kernel_source() {
        // suf.cu's round_rule: 0 rint, 1 trunc, 2 floor.
        assert!(SOURCE.contains("if (rule == 0) return rint(v);"));
        assert!(SOURCE.contains("if (rule == 1) return trunc(v);"));
        assert_eq!(rule_code(Rounding::Round), 0);
        assert_eq!(rule_code(Rounding::Trunc), 1);
        assert_eq!(rule_code(Rounding::Floor), 2);
    }

    #[test]
    fn the_grid_covers_every_element_with_whole_warps() {
        for len in [1u64, 255, 256, 257, 10_000_000] {
            let g = grid(len);
            assert_eq!(g.block_dim.0 % 32, 0);
            assert!(g.grid_dim.0 >= 1 && g.grid_dim.0 as u64 <= MAX_GRID);
        }
    }
}
