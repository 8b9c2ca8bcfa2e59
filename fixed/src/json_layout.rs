//! A pretty JSON layout for descriptor files.
//!
//! serde_json's pretty printer puts every array element on its own line, which turns an
//! 8192-entry table into 25k lines nobody can scan. Here objects are indented as usual,
//! arrays of scalars are packed into lines of about `WIDTH` columns, and arrays of arrays
//! (the polynomials) are packed the same way, one short inner array per item. The text is
//! still plain JSON: any reader parses it.

use serde_json::Value;

const INDENT: &str = "  ";
const WIDTH: usize = 100;

/// Pretty text of `value`, ending with a newline.
pub fn pretty(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out.push('\n');
    out
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            // serde_json's map order depends on a cargo feature another crate may switch on;
            // a fixed key order keeps the file text identical whatever the build.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by_key(|(k, _)| (key_rank(k), k.as_str()));
            for (i, (key, v)) in entries.into_iter().enumerate() {
                push_indent(out, depth + 1);
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_value(out, v, depth + 1);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            push_indent(out, depth);
            out.push('}');
        }
        Value::Array(items) if items.iter().all(is_compact) => write_packed(out, items, depth),
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                push_indent(out, depth + 1);
                write_value(out, v, depth + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            push_indent(out, depth);
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Descriptor fields in declaration order; unknown keys go last, alphabetically.
fn key_rank(key: &str) -> usize {
    const ORDER: [&str; 21] = [
        "format",
        "name",
        "version",
        "function",
        "source",
        "generator",
        "params",
        "input",
        "output_scale_bits",
        "cuts",
        "polys",
        "predicates",
        "error",
        "scale_bits",
        "metric",
        "over",
        "min",
        "max",
        "reference",
        "kind",
        "beta",
    ];
    ORDER.iter().position(|&k| k == key).unwrap_or(ORDER.len())
}

/// Scalars and arrays of scalars print on one line.
fn is_compact(v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().all(|i| !i.is_array() && !i.is_object()),
        Value::Object(map) => map.is_empty(),
        _ => true,
    }
}

/// `[a, b, c, ...]` on one line when it fits, else packed lines of about WIDTH columns.
fn write_packed(out: &mut String, items: &[Value], depth: usize) {
    let texts: Vec<String> = items.iter().map(Value::to_string).collect();
    let one_line = texts.join(", ");
    if one_line.len() + depth * INDENT.len() <= WIDTH {
        out.push('[');
        out.push_str(&one_line);
        out.push(']');
        return;
    }
    out.push_str("[\n");
    let mut line = String::new();
    for (i, t) in texts.iter().enumerate() {
        let piece = if i + 1 < texts.len() {
            format!("{t},")
        } else {
            t.clone()
        };
        if !line.is_empty() && (depth + 1) * INDENT.len() + line.len() + 1 + piece.len() > WIDTH {
            push_indent(out, depth + 1);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&piece);
    }
    push_indent(out, depth + 1);
    out.push_str(&line);
    out.push('\n');
    push_indent(out, depth);
    out.push(']');
}

fn push_indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str(INDENT);
    }
}
