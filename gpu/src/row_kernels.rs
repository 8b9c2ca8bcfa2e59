//! Launchers of the row kernels (suf_rows.cu): one thread block per row of the last axis.

use anyhow::{anyhow, ensure, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use suf_fixed::Rounding;
use tract_cuda::kernels::{get_cuda_view, get_cuda_view_mut};
use tract_gpu::tensor::DeviceTensor;

use crate::kernels::{contiguous, rule_code, Dims, RingStatus};

/// What a row kernel saw (suf_rows.cu's status block).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RowStatus {
    /// The first score whose mask bias is neither a mask fill nor a value the ring holds.
    pub bad_at: Option<u64>,
    /// The largest |input ring value|, as a double (integer units).
    pub max_in: f64,
    /// Rows whose intermediates needed more than n bits.
    pub overflow_rows: u64,
    /// The largest |output ring value|.
    pub max_out: u64,
    /// The widest intermediate over all rows (bits).
    pub need: u32,
    /// Softmax: the most unmasked entries in one row.
    pub max_live: u64,
}

impl RowStatus {
    fn from_words(words: &[u64]) -> Result<Self> {
        ensure!(
            words.len() >= 6,
            "row status block of {} words",
            words.len()
        );
        Ok(RowStatus {
            bad_at: (words[0] != u64::MAX).then_some(words[0]),
            max_in: f64::from_bits(words[1]),
            overflow_rows: words[2],
            max_out: words[3],
            need: u32::try_from(words[4])?,
            max_live: words[5],
        })
    }

    /// The part the elementwise ops' bookkeeping reads (the carried maximum).
    pub fn ring(&self) -> RingStatus {
        RingStatus {
            bad_at: self.bad_at,
            max_in: self.max_in,
            overflows: self.overflow_rows,
            max_out: self.max_out,
        }
    }
}

/// Threads per row: enough for the row, whole warps, at most 256.
fn row_config(rows: u64, c: usize) -> LaunchConfig {
    let threads = (c.next_power_of_two() as u32).clamp(32, 256);
    LaunchConfig {
        grid_dim: (rows.clamp(1, 1 << 16) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The rows of `x` (the last axis is a row) and their width.
pub(crate) fn rows_of(x: &DeviceTensor, y: &DeviceTensor) -> Result<(u64, usize)> {
    contiguous(x, "row input")?;
    contiguous(y, "row output")?;
    ensure!(
        x.len() == y.len(),
        "row op: {} inputs for {} outputs",
        x.len(),
        y.len()
    );
    let c = *x
        .shape()
        .last()
        .ok_or_else(|| anyhow!("row op on a scalar"))?;
    ensure!(
        c > 0 && c <= i32::MAX as usize,
        "row op on rows of width {c}"
    );
    Ok(((x.len() / c) as u64, c))
}

macro_rules! row_launch {
    ($name:expr, $config:expr, |$l:ident, $status:ident| $push:block) => {
        $crate::row_kernels::status_launch!(
            $name,
            $config,
            [u64::MAX, 0, 0, 0, 0, 0],
            RowStatus::from_words,
            |$l, $status| $push
        )
    };
}

/// Launches a row or ring-function kernel (suf_rows.cu, suf_ring_fn.cu) with a status block
/// of the initial words `$init`, and reads the block back with `$parse`.
macro_rules! status_launch {
    ($name:expr, $config:expr, $init:expr, $parse:path, |$l:ident, $status:ident| $push:block) => {{
        let func = $crate::kernels::row_function($name)?;
        tract_cuda::with_cuda_stream(|stream| {
            let $status = stream.clone_htod(&$init)?;
            {
                let mut $l = stream.launch_builder(&func);
                $push
                // SAFETY: the arguments of the kernel's signature in its .cu file, in order;
                // every element (row) the grid strides over lies inside x and y, the tables
                // and parameters are as long as the kernel reads (checked by the callers).
                unsafe { $l.launch($config) }?;
            }
            let words = stream.clone_dtoh(&$status)?;
            $parse(&words)
        })
        .map_err(|e| anyhow::anyhow!("{e:#}"))
    }};
}
pub(crate) use status_launch;

/// The rows of a norm's `x` and their width, with gamma and beta (if any) contiguous and
/// one per column.
pub(crate) fn norm_rows_of(
    x: &DeviceTensor,
    gamma: &DeviceTensor,
    beta: Option<&DeviceTensor>,
    y: &DeviceTensor,
) -> Result<(u64, usize)> {
    let (rows, c) = rows_of(x, y)?;
    for (t, what) in [(Some(gamma), "gamma"), (beta, "beta")] {
        if let Some(t) = t {
            contiguous(t, what)?;
            ensure!(
                t.len() == c,
                "{what} has {} values for rows of {c}",
                t.len()
            );
        }
    }
    Ok((rows, c))
}

/// A softmax mask on the device and its element strides at the scores' coordinates.
pub struct MaskArg<'a> {
    pub bias: &'a DeviceTensor,
    pub strides: Vec<usize>,
}

/// The scores' shape and the mask's strides as the softmax kernels take them, and the rank;
/// checks that the strides stay inside the mask.
pub(crate) fn mask_dims(x: &DeviceTensor, mask: Option<&MaskArg>) -> Result<(Dims, Dims, usize)> {
    let shape = x.shape();
    let rank = shape.len();
    let strides = match mask {
        Some(m) => {
            contiguous(m.bias, "mask bias")?;
            ensure!(m.strides.len() == rank, "mask strides of another rank");
            let reach: usize = shape
                .iter()
                .zip(&m.strides)
                .map(|(d, s)| d.saturating_sub(1) * s)
                .sum::<usize>()
                + 1;
            ensure!(reach <= m.bias.len(), "mask strides reach beyond the mask");
            Dims::new(&m.strides)?
        }
        None => Dims::default(),
    };
    Ok((Dims::new(shape)?, strides, rank))
}

/// The fixed point of a row op.
#[derive(Debug, Clone, Copy)]
pub struct RowRing {
    pub n_bits: u32,
    pub frac_bits: u32,
    pub rounding: Rounding,
}

/// SIGMA's softmax over every row of `x`; `tables` holds the packed nExp-hi, nExp-lo and
/// reciprocal descriptors starting at `at`.
pub fn sigma_softmax(
    ring: RowRing,
    tables: &DeviceTensor,
    at: [i64; 3],
    recip_bits: u32,
    x: &DeviceTensor,
    mask: Option<&MaskArg>,
    y: &DeviceTensor,
) -> Result<RowStatus> {
    let (rows, c) = rows_of(x, y)?;
    let (dims, strides, rank) = mask_dims(x, mask)?;
    let (c32, rank32, recip) = (c as i32, rank as i32, recip_bits as i32);
    let (n, rule) = (ring.n_bits as i32, rule_code(ring.rounding));
    let bound = ((ring.n_bits as i32 - 1 - ring.frac_bits as i32) as f64).exp2();
    let scale = (ring.frac_bits as f64).exp2();
    let (xv, mut yv, tv) = (
        get_cuda_view(x),
        get_cuda_view_mut(y),
        get_cuda_view(tables),
    );
    let mask_view = mask.map(|m| get_cuda_view(m.bias));
    let null: u64 = 0;
    let [hi_at, lo_at, recip_at] = at;
    row_launch!("suf_sigma_softmax", row_config(rows, c), |l, status| {
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
        l.arg(&tv)
            .arg(&hi_at)
            .arg(&lo_at)
            .arg(&recip_at)
            .arg(&recip);
        l.arg(&n).arg(&bound).arg(&scale).arg(&rule).arg(&status);
    })
}

/// SIGMA's LayerNorm (`center`) or RMSNorm over every row of `x`: gamma at scale f, beta at
/// scale 2f, one per column; `rsqrt` the packed rsqrt descriptor.
pub fn sigma_norm(
    ring: RowRing,
    rsqrt: &DeviceTensor,
    center: bool,
    x: &DeviceTensor,
    gamma: &DeviceTensor,
    beta: Option<&DeviceTensor>,
    y: &DeviceTensor,
) -> Result<RowStatus> {
    let (rows, c) = norm_rows_of(x, gamma, beta, y)?;
    let (c32, center, n, f) = (
        c as i32,
        center as i32,
        ring.n_bits as i32,
        ring.frac_bits as i32,
    );
    let (xv, mut yv, gv, rv) = (
        get_cuda_view(x),
        get_cuda_view_mut(y),
        get_cuda_view(gamma),
        get_cuda_view(rsqrt),
    );
    let beta_view = beta.map(get_cuda_view);
    let null: u64 = 0;
    row_launch!("suf_sigma_norm", row_config(rows, c), |l, status| {
        l.arg(&xv).arg(&gv);
        match &beta_view {
            Some(b) => l.arg(b),
            None => l.arg(&null),
        };
        l.arg(&mut yv).arg(&rows).arg(&c32).arg(&rv).arg(&center);
        l.arg(&n).arg(&f).arg(&status);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_status_reads_the_kernels_layout() {
        let s = RowStatus::from_words(&[u64::MAX, 4.0f64.to_bits(), 2, 9, 51, 128]).unwrap();
        assert_eq!(
            s,
            RowStatus {
                bad_at: None,
                max_in: 4.0,
                overflow_rows: 2,
                max_out: 9,
                need: 51,
                max_live: 128
            }
        );
        assert_eq!(s.ring().overflows, 2);
        assert!(RowStatus::from_words(&[0; 5]).is_err());
    }

    #[test]
    fn a_row_gets_whole_warps_and_every_row_a_block() {
        for (rows, c) in [(1u64, 1usize), (7, 33), (1 << 20, 768), (3, 4096)] {
            let g = row_config(rows, c);
            assert_eq!(g.block_dim.0 % 32, 0);
            assert!(g.block_dim.0 <= 256 && g.grid_dim.0 >= 1);
            assert!(g.grid_dim.0 as u64 <= rows.max(1));
        }
    }
}
