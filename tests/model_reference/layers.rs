//! Transformer building blocks on ring tensors, each recording its output under the tensor
//! name the rewritten graph gives it (docs/ring-transport.md "Where ring values come from").

use crate::functions::{self, SigmaTables};
use crate::onnx::{Graph, Weights};
use crate::ring::{product, Level, ProductStats, Ring, RingTensor};

/// What a tensor is, for the regime checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A residual-stream value (embedding sums and residual Adds).
    Residual,
    Other,
}

/// Every SUF tensor the reference computed, in dataflow (topological) order, and what the
/// computation went through.
#[derive(Default)]
pub struct Trace {
    pub tensors: Vec<(String, RingTensor)>,
    pub residual_max_abs: f64,
    pub products: ProductStats,
    /// SIGMA LayerNorm rows whose sum of squares left n unsigned bits / whose sum wrapped.
    pub ln_sum_sq_wraps: usize,
    pub ln_sum_wraps: usize,
    pub ln_rows: usize,
    /// Conditions under which the pipeline cannot be compared (a float island's input
    /// that f32 cannot hold, ...): the case itself is then ill-posed.
    pub unusable: Vec<String>,
}

/// The reference's state: ring, SIGMA tables and the trace being written.
pub struct Ctx {
    pub ring: Ring,
    tables: SigmaTables,
    pub trace: Trace,
}

impl Ctx {
    pub fn new(ring: Ring) -> Self {
        Ctx {
            ring,
            tables: SigmaTables::new(),
            trace: Trace::default(),
        }
    }

    /// Records a SUF tensor and hands it back.
    pub fn emit(&mut self, name: &str, t: RingTensor, role: Role) -> RingTensor {
        if role == Role::Residual {
            let max = t
                .data
                .iter()
                .map(|&q| self.ring.real(q).abs())
                .fold(0.0, f64::max);
            self.trace.residual_max_abs = self.trace.residual_max_abs.max(max);
        }
        assert!(
            !self.trace.tensors.iter().any(|(n, _)| n == name),
            "reference emits `{name}` twice"
        );
        self.trace.tensors.push((name.to_string(), t.clone()));
        t
    }

    /// Embedding Gather: the table rows gathered in float, then Enc. `ids` has shape
    /// `lead`; the output is `lead + [C]`.
    pub fn embed(
        &mut self,
        name: &str,
        table: &Weights,
        ids: &[i64],
        lead: &[usize],
    ) -> RingTensor {
        let c = table.shape[1];
        let mut data = Vec::with_capacity(ids.len() * c);
        for &id in ids {
            let row = usize::try_from(id).expect("token ids are non-negative");
            for &w in &table.values[row * c..(row + 1) * c] {
                data.push(self.ring.enc(w as f64));
            }
        }
        let mut shape = lead.to_vec();
        shape.push(c);
        let t = RingTensor::new(shape, data);
        self.emit(name, t, Role::Other)
    }

    /// SufRingAdd: Wrap(a + b), `b` broadcast over `a`'s leading elements when smaller.
    pub fn add(&mut self, name: &str, a: &RingTensor, b: &RingTensor, role: Role) -> RingTensor {
        assert_eq!(
            a.data.len() % b.data.len(),
            0,
            "`{name}`: operands do not broadcast"
        );
        let data = a
            .data
            .iter()
            .enumerate()
            .map(|(i, &x)| self.ring.wrap(x as i128 + b.data[i % b.data.len()] as i128))
            .collect();
        let t = RingTensor::new(a.shape.clone(), data);
        self.emit(name, t, role)
    }

    /// SufRingMatMul against constant weights: y = Wrap(Ars(Wrap(x W + Enc_2f(bias)), f)).
    /// `w` is [K, N], or [N, K] when `trans_b` (Gemm's transB).
    pub fn linear(
        &mut self,
        name: &str,
        x: &RingTensor,
        w: &Weights,
        trans_b: bool,
        bias: Option<&Weights>,
    ) -> RingTensor {
        let ring = self.ring;
        let (k, n) = if trans_b {
            (w.shape[1], w.shape[0])
        } else {
            (w.shape[0], w.shape[1])
        };
        assert_eq!(
            *x.shape.last().expect("rank >= 1"),
            k,
            "`{name}`: inner dims"
        );
        // Weights encoded once, laid out [N, K] so each output reads one contiguous row.
        let mut wt = vec![0i64; k * n];
        for kk in 0..k {
            for j in 0..n {
                let v = if trans_b {
                    w.values[j * k + kk]
                } else {
                    w.values[kk * n + j]
                };
                wt[j * k + kk] = ring.enc(v as f64);
            }
        }
        let b2f: Vec<i64> = match bias {
            Some(b) => {
                assert_eq!(b.values.len(), n, "`{name}`: bias length");
                b.values
                    .iter()
                    .map(|&v| ring.enc_at(v as f64, 2 * ring.f))
                    .collect()
            }
            None => vec![0; n],
        };
        let rows = x.data.len() / k;
        let mut data = Vec::with_capacity(rows * n);
        let stats = &mut self.trace.products;
        for r in 0..rows {
            let xr = &x.data[r * k..(r + 1) * k];
            for j in 0..n {
                let wr = &wt[j * k..(j + 1) * k];
                let terms = xr.iter().copied().zip(wr.iter().copied());
                data.push(product(&ring, terms, b2f[j], ring.f, stats));
            }
        }
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("rank >= 1") = n;
        let t = RingTensor::new(shape, data);
        self.emit(name, t, Role::Other)
    }

    /// LayerNorm over the last axis, at the level's algorithm.
    pub fn layernorm(
        &mut self,
        name: &str,
        x: &RingTensor,
        gamma: &Weights,
        beta: &Weights,
        eps: f32,
    ) -> RingTensor {
        let ring = self.ring;
        let c = *x.shape.last().expect("rank >= 1");
        let mut data = Vec::with_capacity(x.data.len());
        match ring.level {
            Level::Ring => {
                let g: Vec<i64> = gamma.values.iter().map(|&v| ring.enc(v as f64)).collect();
                let b: Vec<i64> = beta.values.iter().map(|&v| ring.enc(v as f64)).collect();
                for row in x.data.chunks(c) {
                    data.extend(functions::ring_layernorm(&ring, row, &g, &b, eps as f64));
                }
            }
            Level::Sigma => {
                let g: Vec<i64> = gamma.values.iter().map(|&v| ring.enc(v as f64)).collect();
                let b: Vec<i64> = beta
                    .values
                    .iter()
                    .map(|&v| ring.enc_at(v as f64, 2 * ring.f))
                    .collect();
                for row in x.data.chunks(c) {
                    let out = functions::sigma_layernorm(&ring, row, &g, &b);
                    self.trace.ln_rows += 1;
                    self.trace.ln_sum_sq_wraps += usize::from(out.sum_sq_wrapped);
                    self.trace.ln_sum_wraps += usize::from(out.sum_wrapped);
                    data.extend(out.y);
                }
            }
        }
        let t = RingTensor::new(x.shape.clone(), data);
        self.emit(name, t, Role::Other)
    }

    /// GELU site: the erf or tanh formula at level ring, SIGMA's table at level sigma
    /// (SIGMA has one GELU, the erf one, whatever form the model wrote).
    pub fn gelu(&mut self, name: &str, x: &RingTensor, tanh_form: bool) -> RingTensor {
        let ring = self.ring;
        let data = x
            .data
            .iter()
            .map(|&q| match (ring.level, tanh_form) {
                (Level::Ring, false) => functions::ring_gelu_erf(&ring, q),
                (Level::Ring, true) => functions::ring_gelu_tanh(&ring, q),
                (Level::Sigma, _) => self.tables.gelu(&ring, q),
            })
            .collect();
        let t = RingTensor::new(x.shape.clone(), data);
        self.emit(name, t, Role::Other)
    }

    /// Attention scores Q K^T per head, the 2^-k scale folded into the shift (f + k).
    /// `q`, `k` are [B, T, H * D] with head h in channels h*D..(h+1)*D; out [B, H, T, T].
    pub fn scores(&mut self, name: &str, q: &Heads, k: &Heads, scale_log2: u32) -> RingTensor {
        let ring = self.ring;
        let (b, t, h, d) = (q.batch, q.seq, q.heads, q.dim);
        let mut data = Vec::with_capacity(b * h * t * t);
        let stats = &mut self.trace.products;
        for bi in 0..b {
            for hi in 0..h {
                for i in 0..t {
                    for j in 0..t {
                        let terms = (0..d).map(|e| (q.at(bi, i, hi, e), k.at(bi, j, hi, e)));
                        data.push(product(&ring, terms, 0, ring.f + scale_log2, stats));
                    }
                }
            }
        }
        let out = RingTensor::new(vec![b, h, t, t], data);
        self.emit(name, out, Role::Other)
    }

    /// Softmax over the last axis of [B, H, T, T] scores; `masked(b, i, j)` says which keys
    /// take no part (the mask bias of those entries is below -2^(n-1-f)).
    pub fn softmax(
        &mut self,
        name: &str,
        s: &RingTensor,
        masked: &dyn Fn(usize, usize, usize) -> bool,
    ) -> RingTensor {
        let ring = self.ring;
        let (h, t) = (s.shape[1], s.shape[2]);
        let mut data = Vec::with_capacity(s.data.len());
        for (r, row) in s.data.chunks(t).enumerate() {
            let (bi, i) = (r / (h * t), r % t);
            let m: Vec<bool> = (0..t).map(|j| masked(bi, i, j)).collect();
            data.extend(match ring.level {
                Level::Ring => functions::ring_softmax(&ring, row, &m),
                Level::Sigma => self.tables.softmax(&ring, row, &m),
            });
        }
        let out = RingTensor::new(s.shape.clone(), data);
        self.emit(name, out, Role::Other)
    }

    /// P V per head: [B, H, T, T] x V [B, T, H * D] -> [B, H, T, D], shift f.
    pub fn context(&mut self, name: &str, p: &RingTensor, v: &Heads) -> RingTensor {
        let ring = self.ring;
        let (b, t, h, d) = (v.batch, v.seq, v.heads, v.dim);
        let mut data = Vec::with_capacity(b * h * t * d);
        let stats = &mut self.trace.products;
        for bi in 0..b {
            for hi in 0..h {
                for i in 0..t {
                    let prow = &p.data[((bi * h + hi) * t + i) * t..][..t];
                    for e in 0..d {
                        let terms = (0..t).map(|j| (prow[j], v.at(bi, j, hi, e)));
                        data.push(product(&ring, terms, 0, ring.f, stats));
                    }
                }
            }
        }
        let out = RingTensor::new(vec![b, h, t, d], data);
        self.emit(name, out, Role::Other)
    }
}

/// A [B, T, ...] tensor read as heads: channel `offset + h * dim + e` of each position.
pub struct Heads<'a> {
    pub data: &'a [i64],
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub dim: usize,
    /// Channels per position in `data` (GPT-2's fused QKV has 3 * H * D).
    pub stride: usize,
    pub offset: usize,
}

impl Heads<'_> {
    fn at(&self, b: usize, t: usize, h: usize, e: usize) -> i64 {
        self.data[(b * self.seq + t) * self.stride + self.offset + h * self.dim + e]
    }
}

/// [B, H, T, D] -> [B, T, H * D]: the Transpose + Reshape that merges the heads.
pub fn merge_heads(x: &RingTensor) -> RingTensor {
    let (b, h, t, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let mut data = vec![0i64; x.data.len()];
    for bi in 0..b {
        for hi in 0..h {
            for ti in 0..t {
                for e in 0..d {
                    data[(bi * t + ti) * h * d + hi * d + e] =
                        x.data[((bi * h + hi) * t + ti) * d + e];
                }
            }
        }
    }
    RingTensor::new(vec![b, t, h * d], data)
}

/// log2 of 1/c for an attention scale c = 2^-k (the doc folds only powers of two here).
pub fn scale_shift(c: f32) -> u32 {
    let k = -(c as f64).log2();
    assert!(
        k > 0.0 && k.fract() == 0.0,
        "attention scale {c} is not 2^-k: the reference folds only powers of two"
    );
    k as u32
}

/// The token inputs of one batch (row-major [batch, seq]).
pub struct Inputs {
    pub batch: usize,
    pub seq: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

/// Runs a float island: given its output tensor's name and the decoded f32 input, returns
/// the island's f32 output (the engine computes float islands; see the test's header).
pub type Island<'a> = dyn FnMut(&str, &[f32]) -> Vec<f32> + 'a;

impl Ctx {
    /// SufRingDecode (before a float island, at a graph output): q * 2^-f in f32, which
    /// must be exact (the pipeline fails there otherwise, so a case that gets here is
    /// unusable).
    pub fn decode(&mut self, what: &str, x: &RingTensor) -> Vec<f32> {
        let ring = self.ring;
        let out: Vec<f32> = x.data.iter().map(|&q| ring.real(q) as f32).collect();
        let inexact = x
            .data
            .iter()
            .zip(&out)
            .filter(|(&q, &v)| v as f64 != ring.real(q))
            .count();
        if inexact > 0 {
            self.trace.unusable.push(format!(
                "{inexact} values of `{what}` are not exact in f32: its SufRingDecode must fail"
            ));
        }
        out
    }

    /// A SufRingMatMul whose A operand is an f32 tensor (a float island's output): Enc first.
    pub fn encode_f32(&self, x: &[f32], shape: Vec<usize>) -> RingTensor {
        RingTensor::new(shape, x.iter().map(|&v| self.ring.enc(v as f64)).collect())
    }
}

/// The decomposed LayerNorm at `prefix` (ReduceMean ... Mul(gamma), Add_1(beta)).
pub fn layernorm(ctx: &mut Ctx, g: &Graph, prefix: &str, x: &RingTensor) -> RingTensor {
    let gamma = g.weights(&g.node(&format!("{prefix}/Mul")).input[1]);
    let beta = g.add_operand(
        &format!("{prefix}/Add_1"),
        &format!("{prefix}/Mul_output_0"),
    );
    let eps = g.scalar_f32(&format!("{prefix}/Constant_1_output_0"));
    ctx.layernorm(&format!("{prefix}/Add_1_output_0"), x, &gamma, &beta, eps)
}
