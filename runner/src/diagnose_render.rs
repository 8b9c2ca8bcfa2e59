//! `suf-run diagnose` rendered: the Markdown table and the SVG of error by node.

use crate::diagnose::Diagnosis;

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// An overflow count, or n/a for a node that recorded nothing.
fn count(c: Option<usize>) -> String {
    c.map_or("n/a".to_string(), |c| c.to_string())
}

pub fn to_markdown(d: &Diagnosis) -> String {
    let mut out = format!(
        "# suf-run diagnose: {} ({}, n_bits={}, frac_bits={}, {} examples)\n\n",
        d.row, d.emulation, d.n_bits, d.frac_bits, d.examples
    );
    out.push_str(&format!(
        "model `{}` · commit `{}` · {}\n\nHeadroom is log2(2^(n-1-f) / max|x|) at scale f, log2(2^(n-1-2f) / max|y|) for products at 2f, and n minus the ring size the intermediates of a SIGMA softmax/LayerNorm need (sums, the sum of squares); negative means the ring wrapped (overflows @int counts rows). Error and cosine compare this node's output with the float graph's value of the same tensor.\n\n",
        d.model, d.git_commit, d.machine
    ));
    if !d.unrecorded.is_empty() {
        out.push_str(&format!(
            "**{} node(s) recorded no statistics** (pruned by tract or without a recorder; their range and overflow columns read n/a, not 0): {}\n\n",
            d.unrecorded.len(),
            d.unrecorded.join(", ")
        ));
    }
    if d.flagged.is_empty() {
        out.push_str("No node overflowed.\n\n");
    } else {
        out.push_str(&format!(
            "**{} node(s) overflowed:** {}\n\n",
            d.flagged.len(),
            d.flagged.join(", ")
        ));
    }
    out.push_str("| # | node | site | layer | max abs | headroom (bits) | overflows | max abs @2f | headroom @2f | overflows @2f | bits @int | headroom @int | overflows @int | max abs err | cosine |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for n in &d.nodes {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3e} | {:.6} |\n",
            n.index,
            n.node,
            n.site,
            n.layer.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            fmt_opt(n.max_abs, 4),
            fmt_opt(n.headroom_bits, 1),
            count(n.overflows),
            fmt_opt(n.max_abs_2f, 4),
            fmt_opt(n.headroom_2f_bits, 1),
            count(n.overflows_2f),
            n.internal_bits.map_or("-".to_string(), |b| b.to_string()),
            n.headroom_internal_bits.map_or("-".to_string(), |b| b.to_string()),
            count(n.internal_overflows),
            n.max_abs_error,
            n.cosine
        ));
    }
    out
}

const KIND_COLORS: [(&str, &str); 8] = [
    ("matmul", "#1f77b4"),
    ("add", "#ff7f0e"),
    ("layernorm", "#2ca02c"),
    ("rmsnorm", "#2ca02c"),
    ("softmax", "#d62728"),
    ("gelu", "#9467bd"),
    ("silu", "#9467bd"),
    ("embedding", "#8c564b"),
];

/// Max abs error per node (log scale) in graph order, layers shaded, overflowing nodes ringed.
pub fn to_svg(d: &Diagnosis) -> String {
    let (w, h, left, right, top, bottom) = (960.0, 420.0, 70.0, 20.0, 40.0, 60.0);
    let n = d.nodes.len().max(1) as f64;
    let floor = 1e-8f64;
    let ys: Vec<f64> = d
        .nodes
        .iter()
        .map(|x| x.max_abs_error.max(floor).log10())
        .collect();
    let (lo, hi) = (
        ys.iter()
            .cloned()
            .fold(f64::INFINITY, f64::min)
            .floor()
            .min(-4.0),
        ys.iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max)
            .ceil()
            .max(0.0),
    );
    let px = |i: f64| left + (w - left - right) * (i + 0.5) / n;
    let py = |v: f64| top + (h - top - bottom) * (hi - v) / (hi - lo).max(1e-9);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"20\" font-size=\"14\">{} · {} · n={} f={} · max abs error vs float per SUF node ({} examples)</text>\n",
        xml(&d.row), d.emulation, d.n_bits, d.frac_bits, d.examples
    );
    let mut start = 0;
    while start < d.nodes.len() {
        let layer = d.nodes[start].layer;
        let end = (start..d.nodes.len())
            .find(|&j| d.nodes[j].layer != layer)
            .unwrap_or(d.nodes.len());
        if let Some(l) = layer {
            let x0 = px(start as f64 - 0.5);
            let x1 = px(end as f64 - 0.5);
            let fill = if l % 2 == 0 { "#f2f2f2" } else { "#e6e6e6" };
            s.push_str(&format!(
                "<rect x=\"{x0:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">layer {l}</text>\n",
                x1 - x0,
                h - top - bottom,
                (x0 + x1) / 2.0,
                h - bottom + 28.0
            ));
        }
        start = end;
    }
    for e in (lo as i64)..=(hi as i64) {
        let y = py(e as f64);
        s.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ccc\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">1e{e}</text>\n",
            w - right,
            left - 6.0,
            y + 4.0
        ));
    }
    for (i, (node, y)) in d.nodes.iter().zip(&ys).enumerate() {
        let color = KIND_COLORS
            .iter()
            .find(|(k, _)| *k == node.site)
            .map_or("#333", |(_, c)| c);
        let (cx, cy) = (px(i as f64), py(*y));
        s.push_str(&format!(
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3\" fill=\"{color}\"><title>{} ({}) err {:.3e}</title></circle>\n",
            xml(&node.node),
            node.site,
            node.max_abs_error
        ));
        if !node.recorded {
            s.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"none\" stroke=\"#888\"><title>{}: no statistics</title></rect>\n",
                cx - 4.0,
                cy - 4.0,
                xml(&node.node)
            ));
        }
        if node.wrapped() {
            s.push_str(&format!(
                "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"6\" fill=\"none\" stroke=\"red\" stroke-width=\"1.5\"/>\n"
            ));
        }
    }
    let mut lx = left;
    for (k, c) in KIND_COLORS
        .iter()
        .filter(|(k, _)| *k != "rmsnorm" && *k != "silu")
    {
        s.push_str(&format!(
            "<circle cx=\"{lx:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{c}\"/><text x=\"{:.1}\" y=\"{:.1}\">{k}</text>\n",
            h - 12.0,
            lx + 8.0,
            h - 8.0
        ));
        lx += 95.0;
    }
    s.push_str(&format!(
        "<circle cx=\"{lx:.1}\" cy=\"{:.1}\" r=\"6\" fill=\"none\" stroke=\"red\"/><text x=\"{:.1}\" y=\"{:.1}\">overflowed</text>\n</svg>\n",
        h - 12.0,
        lx + 10.0,
        h - 8.0
    ));
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
