//! Length buckets: each example is padded to the smallest bucket length that holds its real
//! tokens instead of to the row's `seq_len`, and batches are formed per bucket. Every bucket
//! is a fixed shape `[batch, L]`, so tract still types the graph with fixed input facts.
//!
//! Default lengths: 16 x 2^k and 16 x 3 x 2^k below `seq_len`, then `seq_len` itself (128:
//! 16, 32, 48, 64, 96, 128; 512 adds 192, 256, 384): beyond 32 tokens at most 1.5x padding
//! (LAMBADA prompts are mostly 64..128 tokens: powers of two alone would put nearly all of
//! them at 128), and few plans, one tract optimisation per graph and used bucket. `"length_buckets": [..]` in the config's global section (or
//! `--length-buckets`) sets them; `seq_len` is always added as the last. `false` (or
//! `--no-length-buckets`) pads every example to `seq_len`, as before.
//!
//! An example's bucket depends only on its own length, so a shard computes every example at
//! the shape a single run does, and batches hold a bucket's examples in dataset order.
//! Padding stays masked: decoders are causal and right-padded (real positions never attend
//! to later ones), encoders mask padded keys with `attention_mask` (a classifier graph
//! without that input is evaluated unbucketed, see `run.rs`).

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

use crate::tokenize::Inputs;

/// The smallest default bucket.
pub const MIN_DEFAULT_BUCKET: usize = 16;

/// The configured setting: on (default lengths), off, or explicit lengths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LengthBuckets {
    Enabled(bool),
    Lengths(Vec<usize>),
}

impl Default for LengthBuckets {
    fn default() -> Self {
        LengthBuckets::Enabled(true)
    }
}

impl LengthBuckets {
    /// The bucket lengths for a row of `seq_len`, ascending, the last `seq_len` (off:
    /// only `seq_len`). Lengths of 0 or beyond `seq_len` are errors.
    pub fn lengths(&self, seq_len: usize) -> Result<Vec<usize>> {
        ensure!(seq_len > 0, "seq_len must be > 0");
        let mut out = match self {
            LengthBuckets::Enabled(false) => vec![],
            LengthBuckets::Enabled(true) => default_lengths(seq_len),
            LengthBuckets::Lengths(v) => {
                for &l in v {
                    if l == 0 || l > seq_len {
                        bail!("length bucket {l} must be between 1 and seq_len ({seq_len})");
                    }
                }
                v.clone()
            }
        };
        out.push(seq_len);
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    pub fn is_off(&self) -> bool {
        *self == LengthBuckets::Enabled(false)
    }
}

/// 16 x 2^k and 16 x 3 x 2^k below `seq_len`, ascending.
fn default_lengths(seq_len: usize) -> Vec<usize> {
    let mut out = vec![];
    let mut p = MIN_DEFAULT_BUCKET;
    while p < seq_len {
        out.push(p);
        if p >= 2 * MIN_DEFAULT_BUCKET && p + p / 2 < seq_len {
            out.push(p + p / 2);
        }
        p = match p.checked_mul(2) {
            Some(p) => p,
            None => break,
        };
    }
    out
}

/// The examples of one bucket (indices into the row's inputs, ascending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub seq_len: usize,
    pub items: Vec<usize>,
}

/// Tokens an example needs: a decoder prompt's length; a classifier input's tokens up to
/// its last unmasked one (padding is on the right).
pub fn real_len(inputs: &Inputs, i: usize) -> usize {
    match inputs {
        Inputs::Lm(v) => v[i].prompt.len(),
        Inputs::Classify(v) => v[i]
            .attention_mask
            .iter()
            .rposition(|&m| m != 0)
            .map_or(0, |p| p + 1),
    }
}

/// Groups every input under the smallest of `lengths` (ascending) holding it; empty
/// buckets are left out. An input longer than the last length is an error.
pub fn schedule(inputs: &Inputs, lengths: &[usize]) -> Result<Vec<Bucket>> {
    let mut buckets: Vec<Bucket> = lengths
        .iter()
        .map(|&seq_len| Bucket {
            seq_len,
            items: vec![],
        })
        .collect();
    for i in 0..inputs.len() {
        let len = real_len(inputs, i).max(1);
        let Some(b) = buckets.iter_mut().find(|b| b.seq_len >= len) else {
            bail!(
                "example {i} has {len} tokens, more than the largest length bucket {:?}",
                lengths.last()
            );
        };
        b.items.push(i);
    }
    buckets.retain(|b| !b.items.is_empty());
    Ok(buckets)
}

/// "16, 32, 48, 64, 96, 128" for notes and logs.
pub fn describe(lengths: &[usize]) -> String {
    lengths
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::{ClassifyInput, LmInput};

    #[test]
    fn default_lengths_are_powers_of_two_and_midpoints_then_seq_len() {
        let on = LengthBuckets::default();
        assert_eq!(on.lengths(128).unwrap(), [16, 32, 48, 64, 96, 128]);
        assert_eq!(on.lengths(100).unwrap(), [16, 32, 48, 64, 96, 100]);
        assert_eq!(
            on.lengths(512).unwrap(),
            [16, 32, 48, 64, 96, 128, 192, 256, 384, 512]
        );
        assert_eq!(on.lengths(16).unwrap(), [16]);
        assert_eq!(on.lengths(8).unwrap(), [8]);
        assert_eq!(LengthBuckets::Enabled(false).lengths(128).unwrap(), [128]);
    }

    #[test]
    fn explicit_lengths_are_sorted_and_end_at_seq_len() {
        let l = LengthBuckets::Lengths(vec![96, 48, 48]);
        assert_eq!(l.lengths(128).unwrap(), [48, 96, 128]);
        for bad in [0, 129] {
            let err = LengthBuckets::Lengths(vec![bad]).lengths(128).unwrap_err();
            assert!(err.to_string().contains("length bucket"), "{err}");
        }
    }

    #[test]
    fn config_values_parse_as_bool_or_list() {
        let p = |s: &str| serde_json::from_str::<LengthBuckets>(s).unwrap();
        assert_eq!(p("false"), LengthBuckets::Enabled(false));
        assert_eq!(p("[16, 64]"), LengthBuckets::Lengths(vec![16, 64]));
        assert!(serde_json::from_str::<LengthBuckets>("\"yes\"").is_err());
    }

    fn lm(lens: &[usize]) -> Inputs {
        Inputs::Lm(
            lens.iter()
                .map(|&n| LmInput {
                    prompt: vec![1; n],
                    label: 1,
                    word: vec![1],
                })
                .collect(),
        )
    }

    #[test]
    fn examples_go_to_the_smallest_bucket_in_order() {
        let b = schedule(&lm(&[40, 3, 16, 17, 128, 1]), &[16, 32, 64, 128]).unwrap();
        let got: Vec<(usize, Vec<usize>)> = b.into_iter().map(|b| (b.seq_len, b.items)).collect();
        assert_eq!(
            got,
            [
                (16, vec![1, 2, 5]),
                (32, vec![3]),
                (64, vec![0]),
                (128, vec![4])
            ]
        );
        assert!(schedule(&lm(&[129]), &[16, 128]).is_err());
    }

    #[test]
    fn classifier_length_is_up_to_the_last_real_token() {
        let mask = |m: &[i64]| ClassifyInput {
            input_ids: vec![7; m.len()],
            attention_mask: m.to_vec(),
            token_type_ids: vec![0; m.len()],
            label: 0,
        };
        let inputs = Inputs::Classify(vec![mask(&[1, 1, 1, 0, 0]), mask(&[1, 0, 1, 0, 0])]);
        assert_eq!(real_len(&inputs, 0), 3);
        assert_eq!(real_len(&inputs, 1), 3);
    }
}
