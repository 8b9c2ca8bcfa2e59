//! suf's runner: datasets, tokenization, tract execution of float and SUF graphs, reports.

pub mod bench;
pub mod cache;
pub mod cli;
pub mod config;
pub mod data;
pub mod diagnose;
pub mod diagnose_render;
pub mod engine;
pub mod evaluate;
pub mod hash;
pub mod labels;
pub mod markdown;
pub mod merge;
pub mod metrics;
pub mod min_bits;
pub mod plot;
pub mod predictions;
pub mod provenance;
pub mod raster;
pub mod report;
pub mod run;
pub mod single;
pub mod suf;
pub mod synthetic;
pub mod sysinfo;
pub mod tokenize;
