//! The last line of defence of every binary: a panic that escapes all error handling becomes
//! one line on stderr naming the model and node being worked on, and a non-zero exit.
//!
//! Code that knows what it works on says so: `set_model` (process-wide, rows are processed
//! one at a time) and `NodeScope` (per thread: rayon workers and tract kernels each run
//! their own node). The hook copies that context when a panic starts, because the stack
//! that knew it is gone by the time `catch_unwind` returns.

use std::cell::RefCell;
use std::panic::{self, UnwindSafe};
use std::sync::Mutex;

/// Exit status of a run that ended in a caught panic (Rust's own panic status).
pub const PANIC_EXIT: i32 = 101;
/// Set (to a node name) to make `run_main` panic inside the guard, at that node: how the
/// tests check that every binary turns a panic into one line.
pub const SELFTEST_ENV: &str = "SUF_PANIC_SELFTEST";

static MODEL: Mutex<Option<String>> = Mutex::new(None);
static LAST: Mutex<Option<PanicRecord>> = Mutex::new(None);

thread_local! {
    static NODE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// What was known when a panic started.
#[derive(Debug, Clone, PartialEq)]
pub struct PanicRecord {
    pub message: String,
    pub location: Option<String>,
    pub model: Option<String>,
    pub node: Option<String>,
}

impl PanicRecord {
    /// The one line a binary prints: tool, model, node, message, source location.
    pub fn line(&self, tool: &str) -> String {
        let text = format!(
            "{tool}: internal error: panic in model {}, node {}: {}{}",
            self.model.as_deref().unwrap_or("(unknown)"),
            self.node.as_deref().unwrap_or("(none)"),
            self.message,
            self.location
                .as_ref()
                .map(|l| format!(" (at {l})"))
                .unwrap_or_default()
        );
        text.replace(['\n', '\r'], " ")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The model (file, row) the process is working on now; `None` when it is done with it.
pub fn set_model(label: Option<String>) {
    *lock(&MODEL) = label;
}

pub fn current_model() -> Option<String> {
    lock(&MODEL).clone()
}

/// Names the node this thread works on until the scope is dropped (scopes nest).
pub struct NodeScope {
    previous: Option<String>,
}

impl NodeScope {
    pub fn enter(node: &str) -> Self {
        let previous = NODE.with(|n| n.borrow_mut().replace(node.to_string()));
        NodeScope { previous }
    }
}

impl Drop for NodeScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        NODE.with(|n| *n.borrow_mut() = previous);
    }
}

/// The node this thread is working on, if any code said so.
pub fn current_node() -> Option<String> {
    NODE.with(|n| n.borrow().clone())
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
pub fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-text panic payload)".into())
}

/// The record of the most recent panic since `install_hook`, taken out.
pub fn take_last() -> Option<PanicRecord> {
    lock(&LAST).take()
}

/// Replaces the default hook (which prints several lines) with one that records the panic
/// and its context silently; whoever catches it decides what to print.
pub fn install_hook() {
    panic::set_hook(Box::new(|info| {
        let record = PanicRecord {
            message: payload_text(info.payload()),
            location: info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line())),
            model: current_model(),
            node: current_node(),
        };
        *lock(&LAST) = Some(record);
    }));
}

/// Runs a binary's `main`: its exit status, or, when it panics, one line on stderr and
/// `PANIC_EXIT`. Without a model set by the code, the command line's `.onnx` paths (or its
/// `--config`) name the model.
pub fn run_main(tool: &str, main: impl FnOnce() -> i32 + UnwindSafe) -> i32 {
    install_hook();
    let selftest = std::env::var(SELFTEST_ENV).ok();
    let guarded = move || {
        if let Some(node) = selftest {
            let _scope = NodeScope::enter(&node);
            panic!("{SELFTEST_ENV} is set");
        }
        main()
    };
    match panic::catch_unwind(guarded) {
        Ok(code) => code,
        Err(payload) => {
            let mut record = take_last().unwrap_or_else(|| PanicRecord {
                message: payload_text(payload.as_ref()),
                location: None,
                model: None,
                node: None,
            });
            if record.model.is_none() {
                record.model = model_from_args(std::env::args().skip(1));
            }
            eprintln!("{}", record.line(tool));
            PANIC_EXIT
        }
    }
}

/// `.onnx` paths on a command line, else the value of `--config`.
fn model_from_args(args: impl Iterator<Item = String>) -> Option<String> {
    let args: Vec<String> = args.collect();
    let models: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| a.ends_with(".onnx"))
        .collect();
    if !models.is_empty() {
        return Some(models.join(", "));
    }
    args.iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .map(|c| format!("(config {c})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_model_node_and_message_on_one_line() {
        let r = PanicRecord {
            message: "index out of bounds:\nthe len is 0".into(),
            location: Some("compiler/src/patterns.rs:12".into()),
            model: Some("m.onnx".into()),
            node: Some("/gather".into()),
        };
        assert_eq!(
            r.line("suf-compile"),
            "suf-compile: internal error: panic in model m.onnx, node /gather: index out of bounds: the len is 0 (at compiler/src/patterns.rs:12)"
        );
    }

    #[test]
    fn node_scopes_nest_and_restore() {
        assert_eq!(current_node(), None);
        {
            let _a = NodeScope::enter("a");
            {
                let _b = NodeScope::enter("b");
                assert_eq!(current_node().as_deref(), Some("b"));
            }
            assert_eq!(current_node().as_deref(), Some("a"));
        }
        assert_eq!(current_node(), None);
    }

    #[test]
    fn command_line_names_the_model() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            model_from_args(args(&["x.onnx", "--n-bits", "37"]).into_iter()).as_deref(),
            Some("x.onnx")
        );
        assert_eq!(
            model_from_args(args(&["--config", "c.json"]).into_iter()).as_deref(),
            Some("(config c.json)")
        );
        assert_eq!(model_from_args(args(&["merge"]).into_iter()), None);
    }
}
