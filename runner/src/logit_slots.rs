//! Where a decoder row's logits are computed when the graph is rewritten by
//! `suf_compiler::logit_positions` (the default; `--full-logits` turns it off): W slots
//! per example, the last W positions of its prompt, right-aligned.
//!
//! LAMBADA reads the prediction at `prompt_len - 1` and, for whole-word accuracy, the k
//! positions `prompt_len - k .. prompt_len` (k = the final word's tokens; the last of them
//! is the prediction). With W = the largest k of the row, slot `j` holds position
//! `prompt_len - W + j`: the prediction is always slot `W - 1` and every read position has
//! a slot. A prompt shorter than W (k <= prompt_len always) clamps its unused leading
//! slots to position 0, so every index stays inside the batch.

use anyhow::{bail, ensure, Result};

use crate::tokenize::LmInput;

/// W for a row: the most positions any of its examples reads (its final word's tokens),
/// at least 1.
pub fn width(inputs: &[LmInput]) -> usize {
    inputs
        .iter()
        .map(|e| e.word.len())
        .max()
        .unwrap_or(1)
        .max(1)
}

/// The position slot `slot` of an example with `prompt_len` tokens holds.
pub fn position(prompt_len: usize, width: usize, slot: usize) -> usize {
    (prompt_len + slot).saturating_sub(width)
}

/// The slot holding `position`, or None when the window does not cover it (a read outside
/// the last W positions: a bug in whoever chose W).
pub fn slot(prompt_len: usize, width: usize, position: usize) -> Option<usize> {
    // slot = position - (prompt_len - width), for positions inside the prompt's last W.
    let first = prompt_len.checked_sub(width);
    match first {
        _ if position >= prompt_len => None,
        Some(first) if position < first => None,
        Some(first) => Some(position - first),
        None => Some(position + width - prompt_len),
    }
}

/// The `logit_positions` input of a batch: for row b and slot j, `b * seq_len +
/// position(prompt_len_b, width, j)`. A short final batch repeats its last example, so
/// every row has a real prompt length.
pub fn flat_positions(prompt_lens: &[usize], seq_len: usize, width: usize) -> Result<Vec<i64>> {
    ensure!(width >= 1, "logit positions: width 0");
    let mut out = Vec::with_capacity(prompt_lens.len() * width);
    for (b, &len) in prompt_lens.iter().enumerate() {
        if len == 0 || len > seq_len {
            bail!("row {b}: prompt of {len} tokens in a window of {seq_len}");
        }
        for j in 0..width {
            out.push((b * seq_len + position(len, width, j)) as i64);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_prompts_last_positions_right_aligned() {
        // Prompt of 5 tokens, W = 3: slots hold positions 2, 3, 4.
        assert_eq!(
            (0..3).map(|j| position(5, 3, j)).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        for p in 2..5 {
            assert_eq!(position(5, 3, slot(5, 3, p).unwrap()), p);
        }
        assert_eq!(slot(5, 3, 1), None);
        assert_eq!(slot(5, 3, 5), None);
        // A prompt shorter than W: leading slots clamp to 0, the read ones stay right.
        assert_eq!(
            (0..3).map(|j| position(2, 3, j)).collect::<Vec<_>>(),
            [0, 0, 1]
        );
        assert_eq!(slot(2, 3, 1), Some(2));
        assert_eq!(slot(2, 3, 0), Some(1));
        assert_eq!(position(2, 3, slot(2, 3, 0).unwrap()), 0);
    }

    #[test]
    fn flat_positions_offset_each_row_by_seq_len() {
        assert_eq!(
            flat_positions(&[5, 1, 1], 8, 2).unwrap(),
            [3, 4, 8, 8, 16, 16]
        );
        assert!(flat_positions(&[9], 8, 1).is_err());
        assert!(flat_positions(&[0], 8, 1).is_err());
    }

    #[test]
    fn width_is_the_longest_word_at_least_one() {
        let ex = |k: usize| LmInput {
            prompt: vec![1; 6],
            label: 1,
            word: vec![1; k],
        };
        assert_eq!(width(&[ex(1), ex(3), ex(2)]), 3);
        assert_eq!(width(&[]), 1);
    }
}
