//! The SUF kernels (suf.cu): compiled once per process by NVRTC, launched on tract-cuda's
//! stream of the calling thread, so they order with tract's own kernels.

use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cudarc::driver::{CudaFunction, CudaModule, LaunchConfig, PushKernelArg};
use suf_fixed::Rounding;
use tract_cuda::kernels::{get_cuda_view, get_cuda_view_mut};
use tract_gpu::tensor::DeviceTensor;

const SOURCE: &str = include_str!("suf.cu");
/// The row kernels (128-bit integer arithmetic); compiled after suf.cu as a second program,
/// so the elementwise kernels do not depend on the row kernels' compilation.
const ROWS_SOURCE: &str = include_str!("suf_rows.cu");
/// Level `ring`'s float functions (suf_ring_fn.cu), compiled with the row kernels.
const RING_FN_SOURCE: &str = include_str!("suf_ring_fn.cu");

/// Threads per block; the kernels fold their scans per warp, so a multiple of 32.
const BLOCK: u32 = 256;
/// Blocks at most: the kernels stride over larger tensors.
const MAX_GRID: u64 = 4096;

type Compiled = OnceLock<std::result::Result<Arc<CudaModule>, String>>;
static MODULE: Compiled = OnceLock::new();
static ROWS_MODULE: Compiled = OnceLock::new();

fn compile(
    cell: &'static Compiled,
    name: &str,
    source: impl FnOnce() -> String,
) -> Result<Arc<CudaModule>> {
    cell.get_or_init(|| {
        let options = cudarc::nvrtc::CompileOptions {
            // Part of the contract: no contraction of a*b+c, so every operation rounds as
            // the CPU's does (see suf.cu).
            fmad: Some(false),
            name: Some(name.into()),
            // The row kernels compute in 128-bit integers, which NVRTC takes only with this.
            options: vec!["--device-int128".into()],
            ..Default::default()
        };
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(source(), options)
            .map_err(|e| format!("NVRTC cannot compile the SUF kernels ({name}): {e}"))?;
        tract_cuda::with_cuda_stream(|stream| Ok(stream.context().load_module(ptx)?))
            .map_err(|e| format!("cannot load the SUF kernels ({name}): {e:#}"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

pub(crate) fn function(name: &str) -> Result<CudaFunction> {
    compile(&MODULE, "suf.cu", || SOURCE.to_string())?
        .load_function(name)
        .with_context(|| format!("SUF kernel {name} not found"))
}

pub(crate) fn row_function(name: &str) -> Result<CudaFunction> {
    compile(&ROWS_MODULE, "suf_rows.cu", || {
        format!("{SOURCE}\n{ROWS_SOURCE}\n{RING_FN_SOURCE}")
    })?
    .load_function(name)
    .with_context(|| format!("SUF kernel {name} not found"))
}

/// suf.cu's code for a rounding rule.
pub(crate) fn rule_code(rounding: Rounding) -> i32 {
    match rounding {
        Rounding::Round => 0,
        Rounding::Trunc => 1,
        Rounding::Floor => 2,
    }
}

pub(crate) fn contiguous(t: &DeviceTensor, what: &str) -> Result<()> {
    let natural = tract_core::internal::natural_strides(t.shape());
    ensure!(
        t.strides() == natural.as_slice(),
        "{what}: the SUF kernels read contiguous tensors, got strides {:?} for shape {:?}",
        t.strides(),
        t.shape()
    );
    Ok(())
}

pub(crate) fn grid(len: u64) -> LaunchConfig {
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
) -> Result<RingStatus> {
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
        RingStatus::from_words(&words)
    })
    .map_err(|e| anyhow!("{e:#}"))
}

/// What a kernel's scan saw (suf.cu's status block).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RingStatus {
    /// The first bad element (non-finite input, or a value the output type cannot hold).
    pub bad_at: Option<u64>,
    /// The largest |input| in the kernel's units (see suf.cu).
    pub max_in: f64,
    /// Values that wrapped.
    pub overflows: u64,
    /// The largest |output ring value|.
    pub max_out: u64,
}

impl RingStatus {
    fn from_words(words: &[u64]) -> Result<Self> {
        ensure!(words.len() >= 4, "status block of {} words", words.len());
        Ok(RingStatus {
            bad_at: (words[0] != u64::MAX).then_some(words[0]),
            max_in: f64::from_bits(words[1]),
            overflows: words[2],
            max_out: words[3],
        })
    }
}

/// Shapes and strides as suf.cu's `Dims` (at most 8 axes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dims {
    pub d: [i64; MAX_RANK],
}

pub const MAX_RANK: usize = 8;

// SAFETY: plain old data of the layout suf.cu declares (8 x i64).
unsafe impl cudarc::driver::DeviceRepr for Dims {}

impl Dims {
    pub fn new(values: &[usize]) -> Result<Self> {
        ensure!(
            values.len() <= MAX_RANK,
            "the SUF kernels take tensors of rank <= {MAX_RANK}, got {}",
            values.len()
        );
        let mut d = Dims::default();
        for (o, &v) in d.d.iter_mut().zip(values) {
            *o = i64::try_from(v)?;
        }
        Ok(d)
    }
}

/// Launches kernel `$name` over `$len` elements with a fresh status block, the arguments
/// pushed by `$push` (in suf.cu's order), and reads the block back (this waits for the
/// kernel). A macro because tract-cuda's stream type cannot be named outside its crate.
macro_rules! ring_launch {
    ($name:expr, $len:expr, |$l:ident, $status:ident| $push:block) => {{
        let func = function($name)?;
        tract_cuda::with_cuda_stream(|stream| {
            let $status = stream.clone_htod(&[u64::MAX, 0, 0, 0])?;
            {
                let mut $l = stream.launch_builder(&func);
                $push
                // SAFETY: the arguments of the kernel's signature in suf.cu, in order; the
                // views cover every element it indexes (checked by the caller).
                unsafe { $l.launch(grid($len)) }?;
            }
            let words = stream.clone_dtoh(&$status)?;
            RingStatus::from_words(&words)
        })
        .map_err(|e| anyhow!("{e:#}"))
    }};
}

/// q = Enc_s(x) (f32 in, i64 ring values out): R(x * 2^scale_bits), wrapped.
pub fn encode_f32(
    grid_: Grid,
    scale_bits: u32,
    x: &DeviceTensor,
    q: &DeviceTensor,
) -> Result<RingStatus> {
    contiguous(x, "encode input")?;
    contiguous(q, "encode output")?;
    ensure!(
        x.len() == q.len(),
        "encode: {} inputs for {} outputs",
        x.len(),
        q.len()
    );
    let len = x.len() as u64;
    let scale = (scale_bits as f64).exp2();
    let (rule, n, bound) = (
        rule_code(grid_.rounding),
        grid_.n_bits as i32,
        grid_.bound(),
    );
    let (xv, mut qv) = (get_cuda_view(x), get_cuda_view_mut(q));
    ring_launch!("suf_encode_f32", len, |l, status| {
        l.arg(&xv)
            .arg(&mut qv)
            .arg(&len)
            .arg(&scale)
            .arg(&rule)
            .arg(&n)
            .arg(&bound)
            .arg(&status);
    })
}

/// y = q * 2^-f as f32 or f64; `bad_at` is the first value the type cannot hold exactly.
pub fn decode(frac_bits: u32, q: &DeviceTensor, y: &DeviceTensor) -> Result<RingStatus> {
    contiguous(q, "decode input")?;
    contiguous(y, "decode output")?;
    ensure!(
        q.len() == y.len(),
        "decode: {} inputs for {} outputs",
        q.len(),
        y.len()
    );
    let to_f64: i32 = match y.datum_type() {
        tract_core::internal::DatumType::F64 => 1,
        tract_core::internal::DatumType::F32 => 0,
        dt => bail!("decode to {dt:?}"),
    };
    let len = q.len() as u64;
    let inv = (-(frac_bits as f64)).exp2();
    let (qv, mut yv) = (get_cuda_view(q), get_cuda_view_mut(y));
    ring_launch!("suf_decode", len, |l, status| {
        l.arg(&qv)
            .arg(&mut yv)
            .arg(&len)
            .arg(&inv)
            .arg(&to_f64)
            .arg(&status);
    })
}

/// suf.cu's binary kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingBinary {
    Add = 0,
    Sub = 1,
    Mul = 2,
}

/// y = a (op) b on ring tensors with numpy broadcasting; `a_strides`/`b_strides` are element
/// strides per output axis (0 where the operand is broadcast).
#[allow(clippy::too_many_arguments)]
pub fn ring_binary(
    kind: RingBinary,
    n_bits: u32,
    frac_bits: u32,
    a: &DeviceTensor,
    b: &DeviceTensor,
    y: &DeviceTensor,
    a_strides: &[usize],
    b_strides: &[usize],
) -> Result<RingStatus> {
    for (t, what) in [(a, "operand A"), (b, "operand B"), (y, "output")] {
        contiguous(t, what)?;
    }
    let shape = y.shape().to_vec();
    let rank = shape.len();
    ensure!(
        a_strides.len() == rank && b_strides.len() == rank,
        "binary: strides of another rank"
    );
    let reach = |strides: &[usize]| -> usize {
        shape
            .iter()
            .zip(strides)
            .map(|(d, s)| d.saturating_sub(1) * s)
            .sum::<usize>()
            + 1
    };
    ensure!(
        y.len() == 0 || (reach(a_strides) <= a.len() && reach(b_strides) <= b.len()),
        "binary: strides reach beyond an operand"
    );
    let len = y.len() as u64;
    let (dims, sa, sb) = (
        Dims::new(&shape)?,
        Dims::new(a_strides)?,
        Dims::new(b_strides)?,
    );
    let (rank, kind, n, f) = (rank as i32, kind as i32, n_bits as i32, frac_bits as i32);
    let (av, bv, mut yv) = (get_cuda_view(a), get_cuda_view(b), get_cuda_view_mut(y));
    ring_launch!("suf_ring_binary", len, |l, status| {
        l.arg(&av)
            .arg(&bv)
            .arg(&mut yv)
            .arg(&len)
            .arg(&rank)
            .arg(&dims)
            .arg(&sa)
            .arg(&sb);
        l.arg(&kind).arg(&n).arg(&f).arg(&status);
    })
}

/// The shape of one ring product: `count` batch elements of [m, k] x [k, n] (B stored [n, k]
/// when `trans_b`), batch offsets from per-axis strides.
#[derive(Debug, Clone)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_b: bool,
    pub batch: Vec<usize>,
    pub a_strides: Vec<usize>,
    pub b_strides: Vec<usize>,
}

/// c = a x b in wrapping 64-bit arithmetic (every batch element), before `ring_finish`.
pub fn ring_gemm(
    shape: &GemmShape,
    a: &DeviceTensor,
    b: &DeviceTensor,
    c: &DeviceTensor,
) -> Result<()> {
    for (t, what) in [(a, "operand A"), (b, "operand B"), (c, "output")] {
        contiguous(t, what)?;
    }
    let GemmShape { m, n, k, .. } = *shape;
    let count: usize = shape.batch.iter().product();
    ensure!(
        c.len() == count * m * n,
        "gemm: output of {} for {count} x {m} x {n}",
        c.len()
    );
    let last = |strides: &[usize], size: usize| -> usize {
        shape
            .batch
            .iter()
            .zip(strides)
            .map(|(d, s)| d.saturating_sub(1) * s)
            .sum::<usize>()
            + size
    };
    ensure!(
        count == 0
            || (last(&shape.a_strides, m * k) <= a.len()
                && last(&shape.b_strides, k * n) <= b.len()),
        "gemm: operands smaller than the product reads"
    );
    if count == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    ensure!(
        count <= 65_535,
        "gemm: {count} batch elements (at most 65535)"
    );
    let tile = 16u32;
    let config = LaunchConfig {
        grid_dim: (
            (n as u32).div_ceil(tile),
            (m as u32).div_ceil(tile),
            count as u32,
        ),
        block_dim: (tile, tile, 1),
        shared_mem_bytes: 0,
    };
    let (mi, ni, ki) = (i32::try_from(m)?, i32::try_from(n)?, i32::try_from(k)?);
    let trans = shape.trans_b as i32;
    let batch_rank = shape.batch.len() as i32;
    let (dims, sa, sb) = (
        Dims::new(&shape.batch)?,
        Dims::new(&shape.a_strides)?,
        Dims::new(&shape.b_strides)?,
    );
    let (av, bv, mut cv) = (get_cuda_view(a), get_cuda_view(b), get_cuda_view_mut(c));
    let func = function("suf_ring_gemm")?;
    tract_cuda::with_cuda_stream(|stream| {
        let mut l = stream.launch_builder(&func);
        l.arg(&av)
            .arg(&bv)
            .arg(&mut cv)
            .arg(&mi)
            .arg(&ni)
            .arg(&ki)
            .arg(&trans);
        l.arg(&batch_rank).arg(&dims).arg(&sa).arg(&sb);
        // SAFETY: suf_ring_gemm's signature, in order; the views cover every offset the
        // batch strides and m, n, k reach (checked above).
        unsafe { l.launch(config) }?;
        Ok(())
    })
    .map_err(|e| anyhow!("{e:#}"))
}

/// The step after the product: + bias (at 2f, one per column), wrap, truncate by `shift`,
/// wrap, then the optional post-multiplier.
#[allow(clippy::too_many_arguments)]
pub fn ring_finish(
    n_bits: u32,
    frac_bits: u32,
    shift: u32,
    truncation: Rounding,
    post_multiplier: Option<i64>,
    c: &DeviceTensor,
    bias: Option<&DeviceTensor>,
    cols: usize,
) -> Result<RingStatus> {
    contiguous(c, "product")?;
    let len = c.len() as u64;
    let cols = cols.max(1) as u64;
    if let Some(b) = bias {
        ensure!(
            b.len() as u64 == cols,
            "finish: bias of {} for {cols} columns",
            b.len()
        );
    }
    let (n, sh, rule, f) = (
        n_bits as i32,
        shift as i32,
        rule_code(truncation),
        frac_bits as i32,
    );
    let (has_post, post) = (
        post_multiplier.is_some() as i32,
        post_multiplier.unwrap_or(0),
    );
    let mut cv = get_cuda_view_mut(c);
    let bias_view = bias.map(get_cuda_view);
    let null: u64 = 0;
    ring_launch!("suf_ring_finish", len, |l, status| {
        l.arg(&mut cv);
        match &bias_view {
            Some(b) => l.arg(b),
            None => l.arg(&null),
        };
        l.arg(&len)
            .arg(&cols)
            .arg(&n)
            .arg(&sh)
            .arg(&rule)
            .arg(&has_post)
            .arg(&post)
            .arg(&f);
        l.arg(&status);
    })
}

/// y = q as f64 (exact while |q| < 2^53); returns max |q|.
pub fn to_f64(q: &DeviceTensor, y: &DeviceTensor) -> Result<u64> {
    contiguous(q, "f64 operand")?;
    ensure!(
        q.len() == y.len() && y.datum_type() == tract_core::internal::DatumType::F64,
        "to_f64: {} values into {} {:?}",
        q.len(),
        y.len(),
        y.datum_type()
    );
    let len = q.len() as u64;
    let (qv, mut yv) = (get_cuda_view(q), get_cuda_view_mut(y));
    let status = ring_launch!("suf_i64_to_f64", len, |l, status| {
        l.arg(&qv).arg(&mut yv).arg(&len).arg(&status);
    })?;
    Ok(status.max_out)
}

/// q = x for integral doubles below 2^53 (the products of the f64 path).
pub fn from_f64(x: &DeviceTensor, q: &DeviceTensor) -> Result<()> {
    ensure!(
        x.len() == q.len(),
        "from_f64: {} values into {}",
        x.len(),
        q.len()
    );
    let len = x.len() as u64;
    let (xv, mut qv) = (get_cuda_view(x), get_cuda_view_mut(q));
    let func = function("suf_f64_to_i64")?;
    tract_cuda::with_cuda_stream(|stream| {
        let mut l = stream.launch_builder(&func);
        l.arg(&xv).arg(&mut qv).arg(&len);
        // SAFETY: suf_f64_to_i64(const double*, i64*, u64): both views hold `len` elements.
        unsafe { l.launch(grid(len)) }?;
        Ok(())
    })
    .map_err(|e| anyhow!("{e:#}"))
}

/// A descriptor as the kernels read it: interval starts, per-piece coefficient offsets and
/// the coefficients, flat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatDescriptor {
    pub cuts: Vec<i64>,
    pub offsets: Vec<i64>,
    pub coeffs: Vec<i64>,
    pub min: i64,
    pub max: i64,
}

impl FlatDescriptor {
    /// The layout suf_rows.cu's `packed_eval` reads: [pieces, lo, hi, cuts, offsets, coefficients].
    pub fn packed(&self) -> Vec<i64> {
        let mut v = vec![self.cuts.len() as i64, self.min, self.max];
        v.extend_from_slice(&self.cuts);
        v.extend_from_slice(&self.offsets);
        v.extend_from_slice(&self.coeffs);
        v
    }

    pub fn new(d: &suf_fixed::descriptor::Descriptor) -> Result<Self> {
        ensure!(
            !d.cuts.is_empty() && d.cuts.len() == d.polys.len(),
            "descriptor {}: {} cuts for {} polynomials",
            d.name,
            d.cuts.len(),
            d.polys.len()
        );
        let mut offsets = vec![0i64];
        let mut coeffs = vec![];
        for p in &d.polys {
            coeffs.extend_from_slice(p);
            offsets.push(coeffs.len() as i64);
        }
        if coeffs.is_empty() {
            coeffs.push(0); // a device buffer is never empty
        }
        Ok(FlatDescriptor {
            cuts: d.cuts.clone(),
            offsets,
            coeffs,
            min: d.input.min,
            max: d.input.max,
        })
    }
}

/// The descriptor's three arrays on the device.
#[derive(Debug)]
pub struct DeviceDescriptor {
    cuts: DeviceTensor,
    offsets: DeviceTensor,
    coeffs: DeviceTensor,
    pieces: i32,
    min: i64,
    max: i64,
}

impl DeviceDescriptor {
    pub fn upload(d: &FlatDescriptor) -> Result<Self> {
        use tract_gpu::tensor::IntoDevice;
        let up = |v: &[i64]| -> Result<DeviceTensor> {
            tract_core::internal::Tensor::from_shape(&[v.len()], v)?.into_device()
        };
        Ok(DeviceDescriptor {
            cuts: up(&d.cuts)?,
            offsets: up(&d.offsets)?,
            coeffs: up(&d.coeffs)?,
            pieces: i32::try_from(d.cuts.len())?,
            min: d.min,
            max: d.max,
        })
    }
}

/// y = Wrap_n(descriptor(q)) element by element.
pub fn sigma_activation(
    n_bits: u32,
    table: &DeviceDescriptor,
    x: &DeviceTensor,
    y: &DeviceTensor,
) -> Result<RingStatus> {
    contiguous(x, "activation input")?;
    contiguous(y, "activation output")?;
    ensure!(
        x.len() == y.len(),
        "activation: {} inputs for {} outputs",
        x.len(),
        y.len()
    );
    let len = x.len() as u64;
    let n = n_bits as i32;
    let (xv, mut yv) = (get_cuda_view(x), get_cuda_view_mut(y));
    let (cv, ov, kv) = (
        get_cuda_view(&table.cuts),
        get_cuda_view(&table.offsets),
        get_cuda_view(&table.coeffs),
    );
    let (pieces, lo, hi) = (table.pieces, table.min, table.max);
    ring_launch!("suf_sigma_activation", len, |l, status| {
        l.arg(&xv).arg(&mut yv).arg(&len).arg(&cv).arg(&ov).arg(&kv);
        l.arg(&pieces).arg(&lo).arg(&hi).arg(&n).arg(&status);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_the_kernels_layout() {
        let s = RingStatus::from_words(&[u64::MAX, 2.5f64.to_bits(), 3, 9]).unwrap();
        assert_eq!(
            s,
            RingStatus {
                bad_at: None,
                max_in: 2.5,
                overflows: 3,
                max_out: 9
            }
        );
        let s = RingStatus::from_words(&[7, 0, 0, 0]).unwrap();
        assert_eq!(s.bad_at, Some(7));
        assert!(RingStatus::from_words(&[0, 0, 0]).is_err());
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
