//! Metrics kept as exact integer counts, so shards merge into precisely the numbers a single
//! run reports: accuracy, F1 (positive class 1), LAMBADA whole-word accuracy, float-vs-SUF
//! agreement, and |logit difference| (summed in fixed point, which is associative).

use serde::{Deserialize, Serialize};

/// Counts for one graph on one row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub n: u64,
    pub correct: u64,
    /// Binary confusion counts with class 1 positive (used for MRPC's F1).
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// LAMBADA: passages whose final word was predicted completely.
    pub word_correct: u64,
}

impl Counts {
    pub fn add_classification(&mut self, predicted: u32, label: u32) {
        self.n += 1;
        self.correct += u64::from(predicted == label);
        match (predicted == 1, label == 1) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => {}
        }
    }

    pub fn add_lm(&mut self, next_token_correct: bool, word_correct: bool) {
        self.n += 1;
        self.correct += u64::from(next_token_correct);
        self.word_correct += u64::from(word_correct);
    }

    pub fn merge(&mut self, o: &Counts) {
        self.n += o.n;
        self.correct += o.correct;
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
        self.word_correct += o.word_correct;
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.correct, self.n)
    }

    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    pub fn word_accuracy(&self) -> f64 {
        ratio(self.word_correct, self.n)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Fixed-point scale of the |difference| sum: 2^-40 resolution, room for 2^87 in i128.
const DIFF_SCALE_BITS: i32 = 40;

/// Statistics of |float logit - SUF logit| over every logit compared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffStats {
    pub elements: u64,
    /// Sum of |d| floored to multiples of 2^-40, as a decimal integer string (i128 exceeds JSON numbers).
    pub sum_scaled: String,
    pub max: f64,
}

/// Accumulator behind [`DiffStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiffAcc {
    pub elements: u64,
    pub sum_scaled: i128,
    pub max: f64,
}

impl DiffAcc {
    /// f32 and f64 logits alike (both are exact in f64).
    pub fn add_slices<A: Copy + Into<f64>, B: Copy + Into<f64>>(&mut self, a: &[A], b: &[B]) {
        let scale = 2f64.powi(DIFF_SCALE_BITS);
        for (&x, &y) in a.iter().zip(b) {
            let d = (x.into() - y.into()).abs();
            self.elements += 1;
            self.sum_scaled += (d * scale).floor() as i128;
            if d > self.max {
                self.max = d;
            }
        }
    }

    pub fn merge(&mut self, o: &DiffAcc) {
        self.elements += o.elements;
        self.sum_scaled += o.sum_scaled;
        self.max = self.max.max(o.max);
    }

    pub fn mean(&self) -> f64 {
        if self.elements == 0 {
            0.0
        } else {
            self.sum_scaled as f64 / 2f64.powi(DIFF_SCALE_BITS) / self.elements as f64
        }
    }

    pub fn to_stats(self) -> DiffStats {
        DiffStats {
            elements: self.elements,
            sum_scaled: self.sum_scaled.to_string(),
            max: self.max,
        }
    }

    pub fn from_stats(s: &DiffStats) -> anyhow::Result<Self> {
        let sum_scaled = s
            .sum_scaled
            .parse::<i128>()
            .map_err(|e| anyhow::anyhow!("bad sum_scaled \"{}\": {e}", s.sum_scaled))?;
        Ok(DiffAcc {
            elements: s.elements,
            sum_scaled,
            max: s.max,
        })
    }
}

/// Index of the largest value; ties go to the first, like numpy/torch argmax.
pub fn argmax<T: Copy + Into<f64>>(xs: &[T]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x.into() > xs[best].into() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_f1_by_hand() {
        let mut c = Counts::default();
        // (pred, label): tp, tp, fp, fn, tn
        for (p, l) in [(1, 1), (1, 1), (1, 0), (0, 1), (0, 0)] {
            c.add_classification(p, l);
        }
        assert_eq!((c.n, c.correct, c.tp, c.fp, c.fn_), (5, 3, 2, 1, 1));
        assert_eq!(c.accuracy(), 0.6);
        // F1 = 2*2 / (2*2 + 1 + 1)
        assert!((c.f1() - 4.0 / 6.0).abs() < 1e-15);
    }

    #[test]
    fn lm_counts() {
        let mut c = Counts::default();
        c.add_lm(true, true);
        c.add_lm(true, false);
        c.add_lm(false, false);
        c.add_lm(false, false);
        assert_eq!(c.accuracy(), 0.5);
        assert_eq!(c.word_accuracy(), 0.25);
    }

    #[test]
    fn diff_sum_is_order_independent() {
        let a = [1.0f32, -2.5, 3.25, 1e-3, 7.0];
        let b = [1.5f32, -2.0, 3.0, 2e-3, -1.0];
        let mut whole = DiffAcc::default();
        whole.add_slices(&a, &b);
        let (mut p1, mut p2) = (DiffAcc::default(), DiffAcc::default());
        p2.add_slices(&a[3..], &b[3..]);
        p1.add_slices(&a[..3], &b[..3]);
        p2.merge(&p1);
        assert_eq!(whole, p2);
        assert_eq!(whole.max, 8.0);
        assert!((whole.mean() - (0.5 + 0.5 + 0.25 + 0.001 + 8.0) / 5.0).abs() < 1e-9);
        let round_trip = DiffAcc::from_stats(&whole.to_stats()).unwrap();
        assert_eq!(round_trip, whole);
    }

    #[test]
    fn argmax_first_of_ties() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, -1.0]), 1);
        assert_eq!(argmax(&[5.0]), 0);
    }
}
