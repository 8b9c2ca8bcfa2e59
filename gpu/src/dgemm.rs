//! Exact ring products on the FP64 units (cuBLAS DGEMM). A product of integers is exact in
//! f64 when every partial sum is an integer below 2^53 in magnitude, whatever order and
//! blocking the library sums in: that holds when k * max|a| * max|b| < 2^53. The bound is
//! computed from the operands of each run (the conversion kernel measures max |q|), never
//! assumed; when it fails, or the batch layout is not one stride per batch element, the
//! product runs in the wrapping 64-bit integer kernel instead. Both give the same integers.

use anyhow::{anyhow, Result};
use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig, StridedBatchedConfig};
use tract_core::internal::DatumType;
use tract_cuda::kernels::{get_cuda_view, get_cuda_view_mut};
use tract_gpu::tensor::DeviceTensor;

use crate::kernels::{self, GemmShape};

/// False when `SUF_GPU_NO_DGEMM` is set (every product then takes the integer kernel, for
/// comparing the two exact paths); read once per process, not per product.
pub fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("SUF_GPU_NO_DGEMM").is_none())
}

/// True when f64 sums of k products of |a| <= max_a and |b| <= max_b are exact.
pub fn exact_in_f64(k: usize, max_a: u64, max_b: u64) -> bool {
    (k as u128)
        .checked_mul(max_a as u128)
        .and_then(|v| v.checked_mul(max_b as u128))
        .is_some_and(|bound| bound < 1u128 << 53)
}

/// The product as cuBLAS strided batches: `count` products of [m, k] x [k, n], A and B
/// advancing by `stride_a` / `stride_b` elements (B's 0: shared weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPlan {
    pub count: usize,
    pub m: usize,
    pub stride_a: usize,
    pub stride_b: usize,
}

/// True when the strides step through `batch` as one contiguous array of `matrix` elements
/// (axes of size 1 may carry any stride).
fn natural(batch: &[usize], strides: &[usize], matrix: usize) -> bool {
    let mut acc = matrix;
    for (&d, &s) in batch.iter().zip(strides).rev() {
        if d > 1 && s != acc {
            return false;
        }
        acc *= d;
    }
    true
}

/// How the product maps onto strided batches, or None when it does not.
pub fn batch_plan(shape: &GemmShape) -> Option<BatchPlan> {
    let count: usize = shape.batch.iter().product();
    let (m, k, n) = (shape.m, shape.k, shape.n);
    if count <= 1 {
        return Some(BatchPlan {
            count: 1,
            m,
            stride_a: 0,
            stride_b: 0,
        });
    }
    if !natural(&shape.batch, &shape.a_strides, m * k) {
        return None;
    }
    if shape
        .b_strides
        .iter()
        .zip(&shape.batch)
        .all(|(&s, &d)| s == 0 || d == 1)
    {
        // Shared weights: one product of all the batch's rows.
        return Some(BatchPlan {
            count: 1,
            m: count * m,
            stride_a: 0,
            stride_b: 0,
        });
    }
    natural(&shape.batch, &shape.b_strides, k * n).then_some(BatchPlan {
        count,
        m,
        stride_a: m * k,
        stride_b: k * n,
    })
}

/// c = a x b through DGEMM when the bound allows; false (c untouched) when it does not.
pub fn try_product(
    shape: &GemmShape,
    a: &DeviceTensor,
    b: &DeviceTensor,
    c: &DeviceTensor,
) -> Result<bool> {
    // cuBLAS refuses leading dimensions of 0: an empty inner product is the integer kernel's.
    let Some(plan) = batch_plan(shape).filter(|_| shape.k > 0) else {
        return Ok(false);
    };
    let f64_of = |t: &DeviceTensor| -> Result<(DeviceTensor, u64)> {
        let y = DeviceTensor::uninitialized_dt(DatumType::F64, t.shape())?;
        let max = kernels::to_f64(t, &y)?;
        Ok((y, max))
    };
    let (af, max_a) = f64_of(a)?;
    let (bf, max_b) = f64_of(b)?;
    if !exact_in_f64(shape.k, max_a, max_b) {
        return Ok(false);
    }
    let cf = DeviceTensor::uninitialized_dt(DatumType::F64, c.shape())?;
    let (m, n, k) = (plan.m as i32, shape.n as i32, shape.k as i32);
    // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS's A is our B.
    let (transa, lda) = if shape.trans_b {
        (cublasOperation_t::CUBLAS_OP_T, k)
    } else {
        (cublasOperation_t::CUBLAS_OP_N, n)
    };
    let config = StridedBatchedConfig {
        gemm: GemmConfig {
            transa,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: n,
            n: m,
            k,
            alpha: 1.0f64,
            lda,
            ldb: k,
            beta: 0.0f64,
            ldc: n,
        },
        batch_size: plan.count as i32,
        stride_a: plan.stride_b as i64,
        stride_b: plan.stride_a as i64,
        stride_c: (plan.m * shape.n) as i64,
    };
    let (av, bv, mut cv) = (
        get_cuda_view(&af),
        get_cuda_view(&bf),
        get_cuda_view_mut(&cf),
    );
    tract_cuda::with_cuda_stream(|stream| {
        // SAFETY: the three buffers were allocated as F64 tensors: their bytes are f64s.
        let (a64, b64, mut c64) = unsafe {
            (
                av.transmute::<f64>(av.len() / 8)
                    .ok_or_else(|| anyhow!("A is not f64-sized"))?,
                bv.transmute::<f64>(bv.len() / 8)
                    .ok_or_else(|| anyhow!("B is not f64-sized"))?,
                cv.transmute_mut::<f64>(cv.len() / 8)
                    .ok_or_else(|| anyhow!("C is not f64-sized"))?,
            )
        };
        // SAFETY: the column-major view of the row-major operands (see above); the batch
        // strides stay inside A and B (batch_plan checked them against the shapes).
        unsafe {
            stream
                .cublas()
                .gemm_strided_batched(config, &b64, &a64, &mut c64)
        }?;
        Ok(())
    })
    .map_err(|e| anyhow!("DGEMM: {e:#}"))?;
    kernels::from_f64(&cf, c)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(batch: &[usize], a: &[usize], b: &[usize], m: usize, k: usize, n: usize) -> GemmShape {
        GemmShape {
            m,
            n,
            k,
            trans_b: false,
            batch: batch.to_vec(),
            a_strides: a.to_vec(),
            b_strides: b.to_vec(),
        }
    }

    #[test]
    fn the_bound_is_exact_at_2_to_the_53() {
        assert!(exact_in_f64(768, 1 << 20, 1 << 20)); // 2^49.6
        assert!(!exact_in_f64(1, 1 << 27, 1 << 26)); // 2^53
        assert!(exact_in_f64(1, (1 << 27) - 1, 1 << 26));
        assert!(!exact_in_f64(4096, u64::MAX, u64::MAX)); // no overflow on the way
        assert!(exact_in_f64(10, 0, u64::MAX));
    }

    #[test]
    fn shared_weights_flatten_and_attention_batches_stride() {
        // [8, 128, 768] x [768, 3072]: one product of 1024 rows.
        let p = batch_plan(&shape(&[8], &[128 * 768], &[0], 128, 768, 3072)).unwrap();
        assert_eq!((p.count, p.m), (1, 1024));
        // [2, 12, 128, 64] x [2, 12, 64, 128]: 24 products.
        let s = shape(
            &[2, 12],
            &[12 * 8192, 8192],
            &[12 * 8192, 8192],
            128,
            64,
            128,
        );
        let p = batch_plan(&s).unwrap();
        assert_eq!((p.count, p.stride_a, p.stride_b), (24, 8192, 8192));
        // B broadcast over one batch axis only: no single stride, the integer kernel.
        assert_eq!(
            batch_plan(&shape(&[2, 3], &[12, 4], &[0, 4], 2, 2, 2)),
            None
        );
    }
}
