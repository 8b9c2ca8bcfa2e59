//! Launchers of level `ring`'s float-function kernels (suf_ring_fn.cu) and their status.

use anyhow::{anyhow, ensure, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use suf_fixed::float_fn::FloatFn;
use tract_cuda::kernels::{get_cuda_view, get_cuda_view_mut};
use tract_gpu::tensor::DeviceTensor;

use crate::kernels::{contiguous, grid, rule_code};
use crate::row_kernels::{mask_dims, norm_rows_of, rows_of, MaskArg, RowRing};

/// What a ring-function kernel saw (suf_ring_fn.cu's status block).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RingFnStatus {
    /// The first score whose mask bias is neither a mask fill nor a value the ring holds.
    pub bad_mask_at: Option<u64>,
    /// The largest |input ring value|.
    pub max_in: u64,
    /// Outputs whose rounding the GPU's error bound cannot certify equal to the CPU's.
    pub uncertified: u64,
    /// The largest |output ring value|.
    pub max_out: u64,
    /// The first input beyond 2^53 (its f64 reading would be rounded).
    pub inexact_at: Option<u64>,
    /// The first non-finite output.
    pub nonfinite_at: Option<u64>,
}

impl RingFnStatus {
    pub(crate) fn from_words(words: &[u64]) -> Result<Self> {
        ensure!(
            words.len() >= 6,
            "ring function status block of {} words",
            words.len()
        );
        let index = |w: u64| (w != u64::MAX).then_some(w);
        Ok(RingFnStatus {
            bad_mask_at: index(words[0]),
            max_in: words[1],
            uncertified: words[2],
            max_out: words[3],
            inexact_at: index(words[4]),
            nonfinite_at: index(words[5]),
        })
    }
}

/// The kernels' code for an elementwise function.
pub fn activation_code(kind: FloatFn) -> Option<i32> {
    match kind {
        FloatFn::GeluErf => Some(0),
        FloatFn::GeluTanh => Some(1),
        FloatFn::Silu => Some(2),
        _ => None,
    }
}

/// `SUF_GPU_RING_SLACK=k` widens every nonzero error bound by 2^k: a diagnosis switch that
/// sends tensors through the CPU recomputation (scripts/gpu_check.sh uses it).
fn slack() -> f64 {
    static SLACK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *SLACK.get_or_init(|| {
        std::env::var("SUF_GPU_RING_SLACK")
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .map(|k| (k.clamp(0, 900) as f64).exp2())
            .unwrap_or(1.0)
    })
}

macro_rules! ring_fn_launch {
    ($name:expr, $config:expr, |$l:ident, $status:ident| $push:block) => {
        crate::row_kernels::status_launch!(
            $name,
            $config,
            [u64::MAX, 0, 0, 0, u64::MAX, u64::MAX],
            RingFnStatus::from_words,
            |$l, $status| $push
        )
    };
}

fn scales(ring: RowRing) -> (f64, f64) {
    let f = ring.frac_bits as f64;
    (f.exp2(), (-f).exp2())
}

/// An elementwise function (GELU, SiLU) over every element of `x`.
pub fn activation(
    ring: RowRing,
    kind: FloatFn,
    x: &DeviceTensor,
    y: &DeviceTensor,
) -> Result<RingFnStatus> {
    contiguous(x, "input")?;
    contiguous(y, "output")?;
    ensure!(
        x.len() == y.len(),
        "{} inputs for {} outputs",
        x.len(),
        y.len()
    );
    let code = activation_code(kind).ok_or_else(|| anyhow!("{} is a row function", kind.name()))?;
    let len = x.len() as u64;
    let (scale, inv_scale) = scales(ring);
    let (n, rule, slack) = (ring.n_bits as i32, rule_code(ring.rounding), slack());
    let (xv, mut yv) = (get_cuda_view(x), get_cuda_view_mut(y));
    ring_fn_launch!("suf_ring_activation", grid(len), |l, status| {
        l.arg(&xv).arg(&mut yv).arg(&len).arg(&code).arg(&n);
        l.arg(&scale)
            .arg(&inv_scale)
            .arg(&slack)
            .arg(&rule)
            .arg(&status);
    })
}

/// One thread per row.
fn row_grid(rows: u64) -> LaunchConfig {
    grid(rows)
}

/// The float softmax over every row of `x`, masked entries excluded.
pub fn softmax(
    ring: RowRing,
    x: &DeviceTensor,
    mask: Option<&MaskArg>,
    y: &DeviceTensor,
) -> Result<RingFnStatus> {
    let (rows, c) = rows_of(x, y)?;
    let (dims, strides, rank) = mask_dims(x, mask)?;
    let (c32, rank32) = (c as i32, rank as i32);
    let (scale, inv_scale) = scales(ring);
    let (n, rule, slack) = (ring.n_bits as i32, rule_code(ring.rounding), slack());
    let bound = ((ring.n_bits as i32 - 1 - ring.frac_bits as i32) as f64).exp2();
    let (xv, mut yv) = (get_cuda_view(x), get_cuda_view_mut(y));
    let mask_view = mask.map(|m| get_cuda_view(m.bias));
    let null: u64 = 0;
    ring_fn_launch!("suf_ring_softmax", row_grid(rows), |l, status| {
        l.arg(&xv);
        match &mask_view {
            Some(m) => l.arg(m),
            None => l.arg(&null),
        };
        l.arg(&mut yv)
            .arg(&rows)
            .arg(&c32)
            .arg(&rank32)
            .arg(&dims)
            .arg(&strides);
        l.arg(&n).arg(&bound).arg(&scale).arg(&inv_scale);
        l.arg(&slack).arg(&rule).arg(&status);
    })
}

/// The float LayerNorm (`center`) or RMSNorm over every row of `x`: gamma and beta ring
/// values at scale f, one per column.
pub fn norm(
    ring: RowRing,
    center: bool,
    eps: f64,
    x: &DeviceTensor,
    gamma: &DeviceTensor,
    beta: Option<&DeviceTensor>,
    y: &DeviceTensor,
) -> Result<RingFnStatus> {
    let (rows, c) = norm_rows_of(x, gamma, beta, y)?;
    let (c32, center) = (c as i32, center as i32);
    let (scale, inv_scale) = scales(ring);
    let (n, rule) = (ring.n_bits as i32, rule_code(ring.rounding));
    let (xv, mut yv, gv) = (get_cuda_view(x), get_cuda_view_mut(y), get_cuda_view(gamma));
    let beta_view = beta.map(get_cuda_view);
    let null: u64 = 0;
    ring_fn_launch!("suf_ring_norm", row_grid(rows), |l, status| {
        l.arg(&xv).arg(&gv);
        match &beta_view {
            Some(b) => l.arg(b),
            None => l.arg(&null),
        };
        l.arg(&mut yv).arg(&rows).arg(&c32).arg(&center).arg(&eps);
        l.arg(&n)
            .arg(&scale)
            .arg(&inv_scale)
            .arg(&rule)
            .arg(&status);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_the_kernels_layout() {
        let s = RingFnStatus::from_words(&[u64::MAX, 77, 3, 9, 5, u64::MAX]).unwrap();
        assert_eq!(
            s,
            RingFnStatus {
                bad_mask_at: None,
                max_in: 77,
                uncertified: 3,
                max_out: 9,
                inexact_at: Some(5),
                nonfinite_at: None,
            }
        );
        assert!(RingFnStatus::from_words(&[0; 5]).is_err());
    }

    #[test]
    fn only_the_elementwise_functions_have_an_activation_code() {
        assert_eq!(activation_code(FloatFn::GeluErf), Some(0));
        assert_eq!(activation_code(FloatFn::GeluTanh), Some(1));
        assert_eq!(activation_code(FloatFn::Silu), Some(2));
        assert_eq!(activation_code(FloatFn::Softmax), None);
    }
}
