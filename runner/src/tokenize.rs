//! Tokenization with the `tokenizers` crate: BERT single/pair inputs padded to seq_len, and the
//! LAMBADA protocol of SPEC section 3 for decoders. Examples are tokenized once and the same
//! ids feed both the float and the SUF graph.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use tokenizers::{TruncationDirection, TruncationStrategy};

use crate::data::Example;

/// A classifier input, padded to seq_len.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyInput {
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub label: u32,
}

/// A LAMBADA input: `prompt` is unpadded (at most seq_len tokens); `label` is the passage's last
/// token; `word` holds the final word's tokens (ending with `label`) for whole-word accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct LmInput {
    pub prompt: Vec<i64>,
    pub label: i64,
    pub word: Vec<i64>,
}

#[derive(Debug, Clone)]
pub enum Inputs {
    Classify(Vec<ClassifyInput>),
    Lm(Vec<LmInput>),
}

impl Inputs {
    pub fn len(&self) -> usize {
        match self {
            Inputs::Classify(v) => v.len(),
            Inputs::Lm(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tokenizes examples the way the row's model family reads them.
pub fn encode(
    family: crate::config::Family,
    tokenizer: &Tokenizer,
    examples: &[Example],
    seq_len: usize,
) -> Result<Inputs> {
    Ok(match family {
        crate::config::Family::BertSeqCls => {
            Inputs::Classify(encode_classify(tokenizer, examples, seq_len)?)
        }
        crate::config::Family::GptLm => Inputs::Lm(encode_lambada(tokenizer, examples, seq_len)?),
    })
}

/// Loads `path`: a tokenizer.json (any `*.json` but `vocab.json`), a BERT WordPiece
/// vocabulary (any `*.txt`, e.g. a checkpoint's `vocab.txt`), a GPT-2 `vocab.json` with
/// `merges.txt` beside it, or a checkpoint directory holding one of those. A missing file
/// named exactly `tokenizer.json` falls back to the vocabulary files of its own directory
/// (a checkpoint that ships only those); any other missing file is an error, so a config
/// never silently picks up another model's vocabulary from a shared folder.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if path.is_file() {
        return match (name, ext) {
            ("vocab.json", _) => {
                let merges = path.with_file_name("merges.txt");
                if !merges.is_file() {
                    bail!(
                        "{} needs merges.txt beside it (GPT-2 byte-level BPE)",
                        path.display()
                    );
                }
                byte_level_bpe(path, &merges)
            }
            (_, "json") => Tokenizer::from_file(path)
                .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display())),
            (_, "txt") => wordpiece_from_vocab(path),
            _ => bail!(
                "{}: not a tokenizer file (expected tokenizer.json, vocab.txt or vocab.json)",
                path.display()
            ),
        };
    }
    let dir: Option<PathBuf> = if path.is_dir() {
        Some(path.to_path_buf())
    } else if name == "tokenizer.json" {
        path.parent().map(Path::to_path_buf)
    } else {
        None
    };
    if let Some(dir) = dir.filter(|d| d.is_dir()) {
        if dir.join("tokenizer.json").is_file() {
            return load_tokenizer(&dir.join("tokenizer.json"));
        }
        if dir.join("vocab.txt").is_file() {
            return wordpiece_from_vocab(&dir.join("vocab.txt"));
        }
        if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() {
            return byte_level_bpe(&dir.join("vocab.json"), &dir.join("merges.txt"));
        }
    }
    bail!(
        "tokenizer not found: {} (need tokenizer.json, vocab.txt, or vocab.json + merges.txt)",
        path.display()
    )
}

/// The files `load_tokenizer(path)` reads (for resume keys): the same choices, no parsing.
pub fn tokenizer_files(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if path.is_file() {
        return if name == "vocab.json" {
            vec![path.to_path_buf(), path.with_file_name("merges.txt")]
        } else {
            vec![path.to_path_buf()]
        };
    }
    let dir = if path.is_dir() {
        Some(path.to_path_buf())
    } else if name == "tokenizer.json" {
        path.parent().map(Path::to_path_buf)
    } else {
        None
    };
    if let Some(dir) = dir {
        for candidate in [
            vec!["tokenizer.json"],
            vec!["vocab.txt"],
            vec!["vocab.json", "merges.txt"],
        ] {
            if candidate.iter().all(|f| dir.join(f).is_file()) {
                return candidate.iter().map(|f| dir.join(f)).collect();
            }
        }
    }
    vec![path.to_path_buf()]
}

/// BERT WordPiece, as `BertTokenizerFast` builds it. Cased vocabularies (any token with an
/// uppercase letter outside the bracketed specials) are not lowercased.
fn wordpiece_from_vocab(vocab: &Path) -> Result<Tokenizer> {
    let vocab_str = vocab.to_str().context("vocab path is not UTF-8")?;
    let model = WordPiece::from_file(vocab_str)
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| anyhow!("cannot load {}: {e}", vocab.display()))?;
    let text = std::fs::read_to_string(vocab)
        .with_context(|| format!("cannot read {}", vocab.display()))?;
    let cased = text
        .lines()
        .any(|t| !t.starts_with('[') && t.chars().any(|c| c.is_ascii_uppercase()));
    let id = |tok: &str| {
        text.lines()
            .position(|l| l == tok)
            .map(|i| i as u32)
            .ok_or_else(|| anyhow!("{} lacks the special token {tok}", vocab.display()))
    };
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, !cased)))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), id("[SEP]")?),
            ("[CLS]".into(), id("[CLS]")?),
        )));
    Ok(tokenizer)
}

/// GPT-2 byte-level BPE (also GPT-Neo's), no special tokens added.
fn byte_level_bpe(vocab: &Path, merges: &Path) -> Result<Tokenizer> {
    let (v, m) = (
        vocab.to_str().context("vocab path is not UTF-8")?,
        merges.to_str().context("merges path is not UTF-8")?,
    );
    let model = BPE::from_file(v, m).build().map_err(|e| {
        anyhow!(
            "cannot load {} + {}: {e}",
            vocab.display(),
            merges.display()
        )
    })?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevel::default()));
    Ok(tokenizer)
}

/// Pads/truncates to seq_len exactly like HF `tokenizer(a, b, truncation=True, padding="max_length")`.
fn configure_classifier(tokenizer: &mut Tokenizer, seq_len: usize) -> Result<()> {
    // The pad token the tokenizer itself declares, else BERT's [PAD]; never a guessed id.
    let pad_token = tokenizer
        .get_padding()
        .map(|p| p.pad_token.clone())
        .unwrap_or_else(|| "[PAD]".into());
    let pad_id = tokenizer.token_to_id(&pad_token).ok_or_else(|| {
        anyhow!("the tokenizer has no pad token {pad_token:?}: cannot pad inputs to seq_len")
    })?;
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: seq_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| anyhow!("cannot set truncation: {e}"))?;
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::Fixed(seq_len),
        direction: PaddingDirection::Right,
        pad_to_multiple_of: None,
        pad_id,
        pad_type_id: 0,
        pad_token,
    }));
    Ok(())
}

pub fn encode_classify(
    tokenizer: &Tokenizer,
    examples: &[Example],
    seq_len: usize,
) -> Result<Vec<ClassifyInput>> {
    let mut tokenizer = tokenizer.clone();
    configure_classifier(&mut tokenizer, seq_len)?;
    examples
        .par_iter()
        .enumerate()
        .map(|(i, ex)| {
            let Example::Classify {
                text_a,
                text_b,
                label,
            } = ex
            else {
                bail!("example {i}: not a classification example");
            };
            let enc = match text_b {
                Some(b) => tokenizer.encode((text_a.as_str(), b.as_str()), true),
                None => tokenizer.encode(text_a.as_str(), true),
            }
            .map_err(|e| anyhow!("example {i}: tokenization failed: {e}"))?;
            let to_i64 = |v: &[u32]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
            Ok(ClassifyInput {
                input_ids: to_i64(enc.get_ids()),
                attention_mask: to_i64(enc.get_attention_mask()),
                token_type_ids: to_i64(enc.get_type_ids()),
                label: *label,
            })
        })
        .collect()
}

fn encode_plain(tokenizer: &Tokenizer, text: &str) -> Result<Vec<i64>> {
    let enc = tokenizer
        .encode(text, false)
        .map_err(|e| anyhow!("tokenization failed: {e}"))?;
    Ok(enc.get_ids().iter().map(|&x| x as i64).collect())
}

/// SPEC section 3: tokenize the whole passage; label = last token; prompt = the rest, cut to
/// the last seq_len tokens. The final word (after the last space) gives the whole-word target.
pub fn encode_lambada(
    tokenizer: &Tokenizer,
    examples: &[Example],
    seq_len: usize,
) -> Result<Vec<LmInput>> {
    let mut tokenizer = tokenizer.clone();
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| anyhow!("cannot clear truncation: {e}"))?;
    examples
        .par_iter()
        .enumerate()
        .map(|(i, ex)| {
            let Example::Passage { text } = ex else {
                bail!("example {i}: not a LAMBADA passage");
            };
            let full = encode_plain(&tokenizer, text).with_context(|| format!("example {i}"))?;
            if full.len() < 2 {
                bail!("example {i}: passage has fewer than 2 tokens");
            }
            let label = full[full.len() - 1];
            let prompt_all = &full[..full.len() - 1];
            let prompt = prompt_all[prompt_all.len().saturating_sub(seq_len)..].to_vec();
            let word_len =
                final_word_len(&tokenizer, text, &full).with_context(|| format!("example {i}"))?;
            // Tokens of the word that fall before the prompt window cannot be scored; the
            // window is 128 tokens and LAMBADA words are a few tokens, so this never bites.
            let word_len = word_len.min(prompt.len());
            let word = full[full.len() - word_len..].to_vec();
            Ok(LmInput {
                prompt,
                label,
                word,
            })
        })
        .collect()
}

/// How many trailing tokens of `full` spell the final word: the tokens after the context's
/// own tokenization when that is a prefix (byte-level BPE splits before the space), else the
/// length of the word tokenized alone with its leading space.
fn final_word_len(tokenizer: &Tokenizer, text: &str, full: &[i64]) -> Result<usize> {
    let trimmed = text.trim_end();
    let Some(space) = trimmed.rfind(char::is_whitespace) else {
        return Ok(1);
    };
    let context = encode_plain(tokenizer, &trimmed[..space])?;
    let n = if full.len() > context.len() && full.starts_with(&context) {
        full.len() - context.len()
    } else {
        encode_plain(tokenizer, &trimmed[space..])?.len()
    };
    Ok(n.clamp(1, full.len() - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERT: &str = "../../shared/tokenizers/bert-base-uncased";
    const GPT2: &str = "../../shared/tokenizers/gpt2";

    fn shared(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    #[test]
    fn bert_pair_is_padded_with_types_and_mask() {
        let tok = load_tokenizer(&shared(BERT).join("tokenizer.json")).unwrap();
        let ex = vec![Example::Classify {
            text_a: "Hello world".into(),
            text_b: Some("Second one".into()),
            label: 1,
        }];
        let enc = encode_classify(&tok, &ex, 16).unwrap();
        let e = &enc[0];
        assert_eq!(e.input_ids.len(), 16);
        // [CLS] hello world [SEP] second one [SEP] then padding
        assert_eq!(&e.input_ids[..7], &[101, 7592, 2088, 102, 2117, 2028, 102]);
        assert_eq!(&e.token_type_ids[..8], &[0, 0, 0, 0, 1, 1, 1, 0]);
        assert_eq!(e.attention_mask.iter().sum::<i64>(), 7);
        assert!(e.input_ids[7..].iter().all(|&x| x == 0));
    }

    #[test]
    fn bert_truncates_to_seq_len() {
        let tok = load_tokenizer(&shared(BERT).join("tokenizer.json")).unwrap();
        let long = "word ".repeat(300);
        let ex = vec![Example::Classify {
            text_a: long.clone(),
            text_b: Some(long),
            label: 0,
        }];
        let e = &encode_classify(&tok, &ex, 128).unwrap()[0];
        assert_eq!(e.input_ids.len(), 128);
        assert_eq!(e.attention_mask.iter().sum::<i64>(), 128);
        assert_eq!(e.input_ids[127], 102);
    }

    #[test]
    fn vocab_txt_builds_the_same_tokenizer() {
        let from_json = load_tokenizer(&shared(BERT).join("tokenizer.json")).unwrap();
        let from_vocab = load_tokenizer(&shared(BERT).join("vocab.txt")).unwrap();
        let ex = vec![Example::Classify {
            text_a: "The Café's unaffable owner, naïvely, said \"no\"!".into(),
            text_b: Some("it 's a charming and often affecting journey . ".into()),
            label: 0,
        }];
        assert_eq!(
            encode_classify(&from_json, &ex, 64).unwrap(),
            encode_classify(&from_vocab, &ex, 64).unwrap()
        );
    }

    #[test]
    fn gpt2_vocab_merges_matches_tokenizer_json() {
        let from_json = load_tokenizer(&shared(GPT2).join("tokenizer.json")).unwrap();
        let from_files = load_tokenizer(&shared(GPT2).join("vocab.json")).unwrap();
        let text = "He looked at her, \"Really?\"  Ünïcode and   spaces end";
        assert_eq!(
            encode_plain(&from_json, text).unwrap(),
            encode_plain(&from_files, text).unwrap()
        );
    }

    #[test]
    fn lambada_protocol_label_prompt_and_word() {
        let tok = load_tokenizer(&shared(GPT2).join("tokenizer.json")).unwrap();
        let text = "the quick brown fox jumps over the lazy dog named Bartholomew";
        let full = encode_plain(&tok, text).unwrap();
        let ex = vec![Example::Passage { text: text.into() }];
        let lm = &encode_lambada(&tok, &ex, 128).unwrap()[0];
        assert_eq!(lm.label, *full.last().unwrap());
        assert_eq!(lm.prompt, full[..full.len() - 1]);
        let word = encode_plain(&tok, " Bartholomew").unwrap();
        assert!(word.len() > 1, "test needs a multi-token word");
        assert_eq!(lm.word, word);
        // Cut to the last 4 tokens.
        let lm4 = &encode_lambada(&tok, &ex, 4).unwrap()[0];
        assert_eq!(lm4.prompt, full[full.len() - 5..full.len() - 1]);
    }

    #[test]
    fn truncation_baked_into_tokenizer_json_is_ignored_for_lambada() {
        // The shared GPT-2 tokenizer.json carries "truncation": {"max_length": 50}.
        let tok = load_tokenizer(&shared(GPT2).join("tokenizer.json")).unwrap();
        let text = "word ".repeat(199) + "end";
        let lm = &encode_lambada(&tok, &[Example::Passage { text }], 128).unwrap()[0];
        assert_eq!(lm.prompt.len(), 128);
        assert_eq!(lm.label, encode_plain(&tok, " end").unwrap()[0]);
    }

    fn vocab_dir(tokens: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("vocab.txt"), tokens.join("\n") + "\n").unwrap();
        d
    }

    #[test]
    fn a_vocabulary_without_pad_is_an_error_not_id_0() {
        let d = vocab_dir(&["[UNK]", "[CLS]", "[SEP]", "hello", "world"]);
        let tok = load_tokenizer(&d.path().join("vocab.txt")).unwrap();
        let ex = vec![Example::Classify {
            text_a: "hello world".into(),
            text_b: None,
            label: 0,
        }];
        let err = format!("{:#}", encode_classify(&tok, &ex, 8).unwrap_err());
        assert!(err.contains("[PAD]"), "{err}");
    }

    #[test]
    fn a_named_vocab_txt_is_a_wordpiece_tokenizer() {
        let d = vocab_dir(&["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"]);
        let named = d.path().join("row.vocab.txt");
        std::fs::rename(d.path().join("vocab.txt"), &named).unwrap();
        let tok = load_tokenizer(&named).unwrap();
        let ex = vec![Example::Classify {
            text_a: "Hello world".into(),
            text_b: None,
            label: 0,
        }];
        let e = &encode_classify(&tok, &ex, 6).unwrap()[0];
        assert_eq!(e.input_ids, vec![2, 4, 5, 3, 0, 0]);
    }

    #[test]
    fn a_missing_row_tokenizer_does_not_fall_back_to_a_shared_vocab() {
        let d = vocab_dir(&["[PAD]", "[UNK]", "[CLS]", "[SEP]"]);
        let err = format!(
            "{:#}",
            load_tokenizer(&d.path().join("bert-tiny-sst2.tokenizer.json")).unwrap_err()
        );
        assert!(err.contains("tokenizer not found"), "{err}");
        // A checkpoint folder whose tokenizer.json is missing uses its own vocab.txt.
        assert!(load_tokenizer(&d.path().join("tokenizer.json")).is_ok());
    }

    #[test]
    fn missing_tokenizer_is_a_clear_error() {
        let err = format!(
            "{:#}",
            load_tokenizer(Path::new("/nonexistent/tokenizer.json")).unwrap_err()
        );
        assert!(
            err.contains("tokenizer not found: /nonexistent/tokenizer.json"),
            "{err}"
        );
    }
}
