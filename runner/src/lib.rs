//! suf's runner: datasets, tokenization, tract execution of float and SUF graphs, reports.

pub mod cli;
