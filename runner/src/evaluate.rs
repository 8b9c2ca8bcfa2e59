//! Runs the float graph and every SUF graph on the same token batches, in parallel over
//! batches, and turns their logits into exact, mergeable counts plus per-example predictions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::Serialize;

use crate::buckets::Bucket;
use crate::engine::{Engine, Logits, LogitsView, TokenBatch};
use crate::metrics::{argmax, Counts, DiffAcc};
use crate::plans::GraphPlans;
use crate::tokenize::{ClassifyInput, Inputs, LmInput};

/// Token id used to right-pad decoder prompts; masked out and never read back.
const LM_PAD_ID: i64 = 0;

/// Counts and timings of one graph, from which every reported number is derived.
#[derive(Debug, Clone, Default)]
pub struct GraphTally {
    pub counts: Counts,
    pub runtime: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct SufTally {
    pub graph: GraphTally,
    pub agree: u64,
    pub diff: DiffAcc,
    /// Levels ring and sigma: the largest |value| a SUF node carried (real units).
    pub max_abs_carried: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct RowTally {
    pub float: GraphTally,
    pub suf: BTreeMap<String, SufTally>,
}

/// One example's predictions, for `--predictions-out`.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub index: usize,
    pub label: i64,
    pub float: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub float_word_correct: Option<bool>,
    pub suf: BTreeMap<String, i64>,
}

/// What one graph predicts for one example.
#[derive(Debug)]
struct Outcome {
    pred: i64,
    correct: bool,
    word_correct: Option<bool>,
}

pub struct Evaluation {
    pub tally: RowTally,
    pub predictions: Vec<Prediction>,
    /// Per length bucket, ascending.
    pub buckets: Vec<BucketRun>,
}

/// The plans of one row: the float graph and every SUF level.
pub struct Graphs {
    pub float: GraphPlans,
    pub suf: Vec<(String, GraphPlans)>,
}

/// How one bucket went: its examples, batches and evaluation wall time (plans excluded).
#[derive(Debug, Clone)]
pub struct BucketRun {
    pub seq_len: usize,
    pub examples: usize,
    pub batches: usize,
    pub evaluate: Duration,
}

/// Every bucket in turn (ascending length): its plans are built (or taken from the cache),
/// its batches run in parallel, and its plans are released. `indices[i]` is the dataset
/// index of `inputs` entry i (for sharded runs); predictions come back in that order.
pub fn evaluate(
    inputs: &Inputs,
    indices: &[usize],
    buckets: &[Bucket],
    graphs: &mut Graphs,
    pool: &rayon::ThreadPool,
    progress: &ProgressBar,
) -> Result<Evaluation> {
    let mut tally = RowTally::default();
    for (name, _) in &graphs.suf {
        tally.suf.insert(name.clone(), SufTally::default());
    }
    let mut predictions = Vec::with_capacity(inputs.len());
    let mut runs = Vec::with_capacity(buckets.len());
    for bucket in buckets {
        let len = bucket.seq_len;
        graphs.float.engine(len).context("float graph")?;
        for (name, plans) in graphs.suf.iter_mut() {
            plans
                .engine(len)
                .with_context(|| format!("SUF graph ({name})"))?;
        }
        let float = graphs.float.get(len).context("float plan just built")?;
        let suf: Vec<(&str, &Engine)> = graphs
            .suf
            .iter()
            .map(|(n, p)| Ok((n.as_str(), p.get(len).context("SUF plan just built")?)))
            .collect::<Result<_>>()?;
        let chunks: Vec<&[usize]> = bucket.items.chunks(float.batch).collect();
        let t0 = Instant::now();
        let per_batch: Vec<(RowTally, Vec<Prediction>)> = pool.install(|| {
            chunks
                .par_iter()
                .map(|items| {
                    let r = run_batch(inputs, items, indices, float, &suf)
                        .with_context(|| describe_items(items, len));
                    progress.inc(items.len() as u64);
                    r
                })
                .collect::<Result<Vec<_>>>()
        })?;
        runs.push(BucketRun {
            seq_len: len,
            examples: bucket.items.len(),
            batches: chunks.len(),
            evaluate: t0.elapsed(),
        });
        for (t, p) in per_batch {
            merge_tally(&mut tally, &t);
            predictions.extend(p);
        }
        graphs.float.release(len);
        for (_, plans) in graphs.suf.iter_mut() {
            plans.release(len);
        }
    }
    predictions.sort_by_key(|p| p.index);
    Ok(Evaluation {
        tally,
        predictions,
        buckets: runs,
    })
}

fn describe_items(items: &[usize], seq_len: usize) -> String {
    match (items.first(), items.last()) {
        (Some(a), Some(b)) => {
            format!(
                "examples {a}..={b} of the length-{seq_len} bucket ({} examples)",
                items.len()
            )
        }
        _ => format!("an empty batch of the length-{seq_len} bucket"),
    }
}

/// One SUF graph alone over every input, bucket by bucket: its counts and how many
/// predictions equal `float_preds` (the float graph's, from an earlier pass over the same
/// inputs).
pub fn evaluate_one(
    inputs: &Inputs,
    buckets: &[Bucket],
    plans: &mut GraphPlans,
    float_preds: &[i64],
    pool: &rayon::ThreadPool,
    progress: &ProgressBar,
) -> Result<(Counts, u64)> {
    let n = inputs.len();
    anyhow::ensure!(
        float_preds.len() == n,
        "{} float predictions for {n} inputs",
        float_preds.len()
    );
    let mut counts = Counts::default();
    let mut agree = 0;
    for bucket in buckets {
        let len = bucket.seq_len;
        let name = plans.name().to_string();
        let engine = plans
            .engine(len)
            .with_context(|| format!("SUF graph ({name})"))?;
        let per_batch: Vec<(Counts, u64)> = pool.install(|| {
            bucket
                .items
                .par_chunks(engine.batch)
                .map(|items| {
                    let tb = token_batch_of(inputs, items, engine.batch, len)?;
                    let logits = engine
                        .run(&tb)
                        .with_context(|| describe_items(items, len))?;
                    let mut counts = Counts::default();
                    let mut agree = 0;
                    for (row, &i) in items.iter().enumerate() {
                        let (label, out, _) = score(inputs, i, row, logits.view(), engine)?;
                        record(&mut counts, inputs, label, &out);
                        agree += u64::from(out.pred == float_preds[i]);
                    }
                    progress.inc(items.len() as u64);
                    Ok((counts, agree))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        for (c, a) in per_batch {
            counts.merge(&c);
            agree += a;
        }
        plans.release(len);
    }
    Ok((counts, agree))
}

pub fn merge_tally(into: &mut RowTally, t: &RowTally) {
    into.float.counts.merge(&t.float.counts);
    into.float.runtime += t.float.runtime;
    for (name, s) in &t.suf {
        let e = into.suf.entry(name.clone()).or_default();
        e.graph.counts.merge(&s.graph.counts);
        e.graph.runtime += s.graph.runtime;
        e.agree += s.agree;
        e.diff.merge(&s.diff);
    }
}

fn run_batch(
    inputs: &Inputs,
    items: &[usize],
    indices: &[usize],
    float: &Engine,
    suf: &[(&str, &Engine)],
) -> Result<(RowTally, Vec<Prediction>)> {
    let tb = token_batch_of(inputs, items, float.batch, float.seq_len)?;
    let timed = |engine: &Engine| -> Result<(Logits, Duration)> {
        let t0 = Instant::now();
        let out = engine.run(&tb)?;
        Ok((out, t0.elapsed()))
    };
    let (float_logits, float_time) = timed(float).context("float graph")?;
    let mut suf_logits = Vec::with_capacity(suf.len());
    for (name, engine) in suf {
        suf_logits.push(timed(engine).with_context(|| format!("SUF graph ({name})"))?);
    }
    let mut tally = RowTally::default();
    tally.float.runtime = float_time;
    for (name, _) in suf {
        tally.suf.insert(name.to_string(), SufTally::default());
    }
    for (name, (_, t)) in suf.iter().map(|(n, _)| n).zip(&suf_logits) {
        tally
            .suf
            .get_mut(*name)
            .expect("inserted above")
            .graph
            .runtime = *t;
    }
    let mut predictions = Vec::with_capacity(items.len());
    for (row, &i) in items.iter().enumerate() {
        let (label, float_out, float_slice) =
            score(inputs, i, row, float_logits.view(), float).context("float graph")?;
        record(&mut tally.float.counts, inputs, label, &float_out);
        let mut prediction = Prediction {
            index: indices[i],
            label,
            float: float_out.pred,
            float_word_correct: float_out.word_correct,
            suf: BTreeMap::new(),
        };
        for ((name, engine), (logits, _)) in suf.iter().zip(&suf_logits) {
            let (_, out, slice) = score(inputs, i, row, logits.view(), engine)
                .with_context(|| format!("SUF graph ({name})"))?;
            let s = tally.suf.get_mut(*name).expect("inserted above");
            record(&mut s.graph.counts, inputs, label, &out);
            s.agree += u64::from(out.pred == float_out.pred);
            s.diff
                .add_slices(&float_slice.to_f64_vec(), &slice.to_f64_vec());
            prediction.suf.insert(name.to_string(), out.pred);
        }
        predictions.push(prediction);
    }
    Ok((tally, predictions))
}

fn record(counts: &mut Counts, inputs: &Inputs, label: i64, out: &Outcome) {
    match inputs {
        Inputs::Classify(_) => counts.add_classification(out.pred as u32, label as u32),
        Inputs::Lm(_) => counts.add_lm(out.correct, out.word_correct.unwrap_or(false)),
    }
}

/// Scores example `i` (row `row` of its batch) on `engine`'s logits: its label, the
/// outcome, and the logits compared between graphs (class logits, or the vocabulary
/// logits at the prompt's last position).
fn score<'a>(
    inputs: &Inputs,
    i: usize,
    row: usize,
    logits: LogitsView<'a>,
    engine: &Engine,
) -> Result<(i64, Outcome, LogitsView<'a>)> {
    score_with(
        inputs,
        i,
        row,
        logits,
        &engine.output_shape,
        engine.logit_width,
    )
}

fn score_with<'a>(
    inputs: &Inputs,
    i: usize,
    row: usize,
    logits: LogitsView<'a>,
    shape: &[usize],
    logit_width: Option<usize>,
) -> Result<(i64, Outcome, LogitsView<'a>)> {
    match inputs {
        Inputs::Classify(v) => {
            let classes = *shape.last().context("logits have no class dim")?;
            if shape.len() != 2 {
                anyhow::bail!("classifier logits have shape {shape:?}; expected [batch, classes]");
            }
            let slice = finite(logits.slice(row * classes..(row + 1) * classes), i)?;
            let pred = argmax_of(slice) as i64;
            let label = i64::from(v[i].label);
            Ok((
                label,
                Outcome {
                    pred,
                    correct: pred == label,
                    word_correct: None,
                },
                slice,
            ))
        }
        Inputs::Lm(v) => {
            let ex = &v[i];
            let read = lm_read_logits(ex, row, logits, shape, logit_width)
                .with_context(|| format!("example {i}"))?;
            for x in &read {
                finite(*x, i)?;
            }
            // The last read position is the prompt's last: the prediction.
            let last_logits = *read.last().context("no logits read")?;
            let pred = argmax_of(last_logits) as i64;
            let word_ok = read
                .iter()
                .zip(&ex.word)
                .all(|(x, &t)| argmax_of(*x) as i64 == t);
            Ok((
                ex.label,
                Outcome {
                    pred,
                    correct: pred == ex.label,
                    word_correct: Some(word_ok),
                },
                last_logits,
            ))
        }
    }
}

fn argmax_of(v: LogitsView) -> usize {
    match v {
        LogitsView::F32(s) => argmax(s),
        LogitsView::F64(s) => argmax(s),
    }
}

/// The vocabulary logits LAMBADA reads for one example (row `row` of its batch): one slice
/// per position `prompt_len - k .. prompt_len` (k = the final word's tokens), in order, so
/// the last is the prediction. `logit_width` None: the logits are [batch, seq, vocab] and
/// position p is row p; Some(W): they are [batch, W, vocab] and position p is its slot
/// (`logit_slots`), as the rewritten graph computed it.
pub fn lm_read_logits<'a>(
    ex: &LmInput,
    row: usize,
    logits: LogitsView<'a>,
    shape: &[usize],
    logit_width: Option<usize>,
) -> Result<Vec<LogitsView<'a>>> {
    let [_, rows, vocab] = *shape else {
        anyhow::bail!("LM logits have shape {shape:?}; expected [batch, seq or W, vocab]");
    };
    if let Some(w) = logit_width {
        anyhow::ensure!(
            rows == w,
            "logits at {w} positions per example have shape {shape:?}"
        );
    }
    let len = ex.prompt.len();
    let k = ex.word.len();
    anyhow::ensure!(
        k >= 1 && k <= len,
        "final word of {k} tokens for a prompt of {len}"
    );
    (len - k..len)
        .map(|pos| {
            let at = match logit_width {
                None => pos,
                Some(w) => crate::logit_slots::slot(len, w, pos).with_context(|| {
                    format!("position {pos} is outside the {w} logit slots of a {len}-token prompt")
                })?,
            };
            anyhow::ensure!(at < rows, "position {pos} beyond the logits' {rows} rows");
            let start = (row * rows + at) * vocab;
            logits
                .try_slice(start..start + vocab)
                .with_context(|| format!("row {row} beyond the batch's logits"))
        })
        .collect()
}

/// Logits that feed a prediction must be finite: argmax would silently skip a NaN.
fn finite(xs: LogitsView, example: usize) -> Result<LogitsView> {
    match (0..xs.len()).find(|&p| !xs.get(p).is_finite()) {
        None => Ok(xs),
        Some(p) => anyhow::bail!(
            "example {example}: non-finite logit {} at index {p}",
            xs.get(p)
        ),
    }
}

/// The token batch holding examples `start..end` (padded to `batch` rows).
pub fn token_batch(
    inputs: &Inputs,
    start: usize,
    end: usize,
    batch: usize,
    seq_len: usize,
) -> TokenBatch {
    match inputs {
        Inputs::Classify(v) => classify_batch(&v[start..end], batch, seq_len),
        Inputs::Lm(v) => lm_batch(&v[start..end], batch, seq_len),
    }
}

/// The token batch holding examples `items` (any of the row's, in this order), each padded
/// (or cut) to `seq_len`: a length bucket. Cutting a classifier input is refused unless
/// everything cut is masked padding; a decoder prompt must fit.
pub fn token_batch_of(
    inputs: &Inputs,
    items: &[usize],
    batch: usize,
    seq_len: usize,
) -> Result<TokenBatch> {
    anyhow::ensure!(
        !items.is_empty() && items.len() <= batch,
        "{} examples for a batch of {batch}",
        items.len()
    );
    let real = |i: usize| crate::buckets::real_len(inputs, i);
    if let Some(&i) = items
        .iter()
        .find(|&&i| i >= inputs.len() || real(i) > seq_len)
    {
        anyhow::bail!(
            "example {i} does not fit inputs of length {seq_len} ({} tokens)",
            if i < inputs.len() { real(i) } else { 0 }
        );
    }
    Ok(match inputs {
        Inputs::Classify(v) => {
            if let Some(&i) = items.iter().find(|&&i| {
                let r = &v[i];
                r.input_ids.len() < seq_len
                    || r.attention_mask.len() < seq_len
                    || r.token_type_ids.len() < seq_len
            }) {
                anyhow::bail!(
                    "example {i} holds {} tokens, fewer than the batch's length {seq_len}",
                    v[i].input_ids.len()
                );
            }
            let rows: Vec<ClassifyInput> = items.iter().map(|&i| fit(&v[i], seq_len)).collect();
            classify_batch(&rows, batch, seq_len)
        }
        Inputs::Lm(v) => {
            let rows: Vec<LmInput> = items.iter().map(|&i| v[i].clone()).collect();
            lm_batch(&rows, batch, seq_len)
        }
    })
}

/// A classifier input (padded to the row's `seq_len`) cut to a bucket's `seq_len`; the
/// caller checked that only masked padding is cut.
fn fit(r: &ClassifyInput, seq_len: usize) -> ClassifyInput {
    ClassifyInput {
        input_ids: r.input_ids[..seq_len].to_vec(),
        attention_mask: r.attention_mask[..seq_len].to_vec(),
        token_type_ids: r.token_type_ids[..seq_len].to_vec(),
        label: r.label,
    }
}

/// Fills a fixed-size batch; a short final batch repeats its last example (outputs ignored).
fn classify_batch(rows: &[ClassifyInput], batch: usize, seq_len: usize) -> TokenBatch {
    let mut tb = TokenBatch {
        batch,
        seq_len,
        input_ids: vec![],
        attention_mask: vec![],
        token_type_ids: vec![],
        prompt_lens: vec![],
    };
    for b in 0..batch {
        let r = &rows[b.min(rows.len() - 1)];
        tb.input_ids.extend(&r.input_ids);
        tb.attention_mask.extend(&r.attention_mask);
        tb.token_type_ids.extend(&r.token_type_ids);
    }
    tb
}

/// Right-pads each prompt with a masked pad token; causal attention keeps real positions exact.
fn lm_batch(rows: &[LmInput], batch: usize, seq_len: usize) -> TokenBatch {
    let mut tb = TokenBatch {
        batch,
        seq_len,
        input_ids: vec![],
        attention_mask: vec![],
        token_type_ids: vec![0; batch * seq_len],
        prompt_lens: vec![],
    };
    for b in 0..batch {
        let r = &rows[b.min(rows.len() - 1)];
        tb.prompt_lens.push(r.prompt.len());
        let pad = seq_len - r.prompt.len();
        tb.input_ids.extend(&r.prompt);
        tb.input_ids.extend(std::iter::repeat_n(LM_PAD_ID, pad));
        tb.attention_mask
            .extend(std::iter::repeat_n(1, r.prompt.len()));
        tb.attention_mask.extend(std::iter::repeat_n(0, pad));
    }
    tb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lm_batch_pads_right_and_repeats_last() {
        let rows = vec![
            LmInput {
                prompt: vec![5, 6, 7],
                label: 8,
                word: vec![8],
            },
            LmInput {
                prompt: vec![9],
                label: 3,
                word: vec![3],
            },
        ];
        let tb = lm_batch(&rows, 3, 4);
        assert_eq!(tb.input_ids, vec![5, 6, 7, 0, 9, 0, 0, 0, 9, 0, 0, 0]);
        assert_eq!(tb.attention_mask, vec![1, 1, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn lm_scoring_reads_last_real_positions() {
        // batch 1, seq 4, vocab 3; prompt of length 3, word of 2 tokens [2, 1].
        let inputs = Inputs::Lm(vec![LmInput {
            prompt: vec![0, 0, 0],
            label: 1,
            word: vec![2, 1],
        }]);
        #[rustfmt::skip]
        let logits = vec![
            9.0, 0.0, 0.0,  // pos 0
            0.0, 0.0, 5.0,  // pos 1 -> 2 (first word token)
            0.0, 4.0, 0.0,  // pos 2 -> 1 (label)
            7.0, 0.0, 0.0,  // pos 3: padding, must be ignored
        ];
        let (label, out, slice) =
            score_with(&inputs, 0, 0, LogitsView::F32(&logits), &[1, 4, 3], None).unwrap();
        assert_eq!(
            (label, out.pred, out.correct, out.word_correct),
            (1, 1, true, Some(true))
        );
        assert_eq!(slice.to_f64_vec(), vec![0.0, 4.0, 0.0]);
        // The same reads from the W = 3 slots of the rewritten graph: positions 0, 1, 2.
        let (label, out, slice) = score_with(
            &inputs,
            0,
            0,
            LogitsView::F32(&logits[..9]),
            &[1, 3, 3],
            Some(3),
        )
        .unwrap();
        assert_eq!(
            (label, out.pred, out.correct, out.word_correct),
            (1, 1, true, Some(true))
        );
        assert_eq!(slice.to_f64_vec(), vec![0.0, 4.0, 0.0]);
        // W = 2: slots hold positions 1 and 2.
        let (_, out, slice) = score_with(
            &inputs,
            0,
            0,
            LogitsView::F32(&logits[3..9]),
            &[1, 2, 3],
            Some(2),
        )
        .unwrap();
        assert_eq!((out.pred, out.word_correct), (1, Some(true)));
        assert_eq!(slice.to_f64_vec(), vec![0.0, 4.0, 0.0]);
        // A window narrower than the word cannot be read: an error, never a wrong slot.
        let err = score_with(
            &inputs,
            0,
            0,
            LogitsView::F32(&logits[6..9]),
            &[1, 1, 3],
            Some(1),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("outside the 1 logit slots"),
            "{err:#}"
        );
    }

    #[test]
    fn lm_batch_records_prompt_lengths_of_repeated_rows() {
        let rows = vec![LmInput {
            prompt: vec![5, 6],
            label: 8,
            word: vec![8],
        }];
        assert_eq!(lm_batch(&rows, 3, 4).prompt_lens, vec![2, 2, 2]);
    }
}
