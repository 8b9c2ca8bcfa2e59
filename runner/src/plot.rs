//! Accuracy against ring size n for each level a `--find-min-bits` search evaluated, one
//! plot per row, drawn once as a list of shapes and rendered both as SVG and as PNG
//! (`raster.rs`), written beside the Markdown report.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::raster;
use crate::report::{self, Report, RowReport};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// What a plot is made of; coordinates in pixels, y downwards.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Rect {
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        fill: Rgb,
    },
    Line {
        x0: f64,
        y0: f64,
        x1: f64,
        y1: f64,
        color: Rgb,
        width: f64,
        dashed: bool,
    },
    Dot {
        x: f64,
        y: f64,
        r: f64,
        color: Rgb,
    },
    Ring {
        x: f64,
        y: f64,
        r: f64,
        color: Rgb,
    },
    Text {
        x: f64,
        y: f64,
        text: String,
        anchor: Anchor,
        color: Rgb,
    },
}

pub struct Plot {
    pub width: u32,
    pub height: u32,
    pub shapes: Vec<Shape>,
}

const BLACK: Rgb = Rgb(0, 0, 0);
const GREY: Rgb = Rgb(200, 200, 200);
const WHITE: Rgb = Rgb(255, 255, 255);

pub fn level_color(level: &str) -> Rgb {
    match level {
        "output" => Rgb(31, 119, 180),
        "ring" => Rgb(255, 127, 14),
        "sigma" => Rgb(44, 160, 44),
        _ => Rgb(90, 90, 90),
    }
}

/// One level's (n, accuracy %) points and its min n.
type Series<'a> = (&'a str, Vec<(f64, f64)>, Option<u32>);

/// The plot of one row, or None when no level of it was searched.
pub fn min_bits_plot(r: &RowReport) -> Option<Plot> {
    let float = r.float.as_ref()?.acc * 100.0;
    let series: Vec<Series> = crate::suf::LEVELS
        .iter()
        .filter_map(|l| {
            let m = r.min_bits.get(l.as_str())?;
            let mut pts: Vec<(f64, f64)> = m
                .trials
                .iter()
                .map(|t| (f64::from(t.n_bits), t.acc * 100.0))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            pts.dedup_by(|a, b| a.0 == b.0);
            Some((l.as_str(), pts, m.min_bits))
        })
        .filter(|(_, pts, _)| !pts.is_empty())
        .collect();
    if series.is_empty() {
        return None;
    }
    let (w, h) = (640.0, 400.0);
    let (left, right, top, bottom) = (56.0, 16.0, 36.0, 64.0);
    let xs = series.iter().flat_map(|(_, p, _)| p.iter().map(|q| q.0));
    let x_lo = xs.clone().fold(f64::INFINITY, f64::min).floor() - 1.0;
    let x_hi = xs.fold(f64::NEG_INFINITY, f64::max).ceil() + 1.0;
    let ys = series
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|q| q.1))
        .chain([float]);
    let y_lo = (ys.clone().fold(f64::INFINITY, f64::min) / 10.0).floor() * 10.0;
    let y_hi = ((ys.fold(f64::NEG_INFINITY, f64::max) / 10.0).ceil() * 10.0).max(y_lo + 10.0);
    let px = |x: f64| left + (w - left - right) * (x - x_lo) / (x_hi - x_lo);
    let py = |y: f64| top + (h - top - bottom) * (y_hi - y) / (y_hi - y_lo);
    let mut s = vec![Shape::Rect {
        x: 0.0,
        y: 0.0,
        w,
        h,
        fill: WHITE,
    }];
    s.push(Shape::Text {
        x: left,
        y: 20.0,
        text: format!(
            "{}: accuracy (%) against ring size n, f = {}",
            r.id, r.frac_bits
        ),
        anchor: Anchor::Start,
        color: BLACK,
    });
    // Grid and ticks: every 10 points of accuracy, every 4 bits of n.
    let mut y = y_lo;
    while y <= y_hi + 1e-9 {
        s.push(Shape::Line {
            x0: left,
            y0: py(y),
            x1: w - right,
            y1: py(y),
            color: GREY,
            width: 1.0,
            dashed: false,
        });
        s.push(Shape::Text {
            x: left - 6.0,
            y: py(y) + 4.0,
            text: format!("{y:.0}"),
            anchor: Anchor::End,
            color: BLACK,
        });
        y += 10.0;
    }
    let mut n = (x_lo / 4.0).ceil() * 4.0;
    while n <= x_hi {
        s.push(Shape::Line {
            x0: px(n),
            y0: h - bottom,
            x1: px(n),
            y1: h - bottom + 4.0,
            color: BLACK,
            width: 1.0,
            dashed: false,
        });
        s.push(Shape::Text {
            x: px(n),
            y: h - bottom + 16.0,
            text: format!("{n:.0}"),
            anchor: Anchor::Middle,
            color: BLACK,
        });
        n += 4.0;
    }
    s.push(Shape::Line {
        x0: left,
        y0: h - bottom,
        x1: w - right,
        y1: h - bottom,
        color: BLACK,
        width: 1.0,
        dashed: false,
    });
    s.push(Shape::Line {
        x0: left,
        y0: top,
        x1: left,
        y1: h - bottom,
        color: BLACK,
        width: 1.0,
        dashed: false,
    });
    s.push(Shape::Line {
        x0: left,
        y0: py(float),
        x1: w - right,
        y1: py(float),
        color: BLACK,
        width: 1.0,
        dashed: true,
    });
    for (level, pts, min) in &series {
        let c = level_color(level);
        for pair in pts.windows(2) {
            s.push(Shape::Line {
                x0: px(pair[0].0),
                y0: py(pair[0].1),
                x1: px(pair[1].0),
                y1: py(pair[1].1),
                color: c,
                width: 2.0,
                dashed: false,
            });
        }
        for &(x, y) in pts {
            s.push(Shape::Dot {
                x: px(x),
                y: py(y),
                r: 3.0,
                color: c,
            });
        }
        if let Some(&(x, y)) = min.and_then(|m| pts.iter().find(|p| p.0 == f64::from(m))) {
            s.push(Shape::Ring {
                x: px(x),
                y: py(y),
                r: 7.0,
                color: c,
            });
        }
    }
    // Legend: one entry per level, then the float line and the min-n ring.
    let mut lx = left;
    let ly = h - 18.0;
    for (level, _, min) in &series {
        let c = level_color(level);
        s.push(Shape::Line {
            x0: lx,
            y0: ly - 4.0,
            x1: lx + 18.0,
            y1: ly - 4.0,
            color: c,
            width: 2.0,
            dashed: false,
        });
        let label = match min {
            Some(m) => format!("{level} (min n {m})"),
            None => format!("{level} (no n within tolerance)"),
        };
        s.push(Shape::Text {
            x: lx + 24.0,
            y: ly,
            text: label.clone(),
            anchor: Anchor::Start,
            color: BLACK,
        });
        lx += 24.0 + 7.0 * label.len() as f64 + 16.0;
    }
    s.push(Shape::Line {
        x0: lx,
        y0: ly - 4.0,
        x1: lx + 18.0,
        y1: ly - 4.0,
        color: BLACK,
        width: 1.0,
        dashed: true,
    });
    s.push(Shape::Text {
        x: lx + 24.0,
        y: ly,
        text: format!("float {float:.2}"),
        anchor: Anchor::Start,
        color: BLACK,
    });
    Some(Plot {
        width: w as u32,
        height: h as u32,
        shapes: s,
    })
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn to_svg(p: &Plot) -> String {
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"monospace\" font-size=\"11\">\n",
        p.width, p.height
    );
    for shape in &p.shapes {
        out.push_str(&match shape {
            Shape::Rect { x, y, w, h, fill } => format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{}\"/>\n",
                fill.hex()
            ),
            Shape::Line { x0, y0, x1, y1, color, width, dashed } => format!(
                "<line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x1:.1}\" y2=\"{y1:.1}\" stroke=\"{}\" stroke-width=\"{width}\"{}/>\n",
                color.hex(),
                if *dashed { " stroke-dasharray=\"6 4\"" } else { "" }
            ),
            Shape::Dot { x, y, r, color } => format!(
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r}\" fill=\"{}\"/>\n",
                color.hex()
            ),
            Shape::Ring { x, y, r, color } => format!(
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"/>\n",
                color.hex()
            ),
            Shape::Text { x, y, text, anchor, color } => format!(
                "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{}\" fill=\"{}\">{}</text>\n",
                match anchor {
                    Anchor::Start => "start",
                    Anchor::Middle => "middle",
                    Anchor::End => "end",
                },
                color.hex(),
                xml(text)
            ),
        });
    }
    out.push_str("</svg>\n");
    out
}

/// Writes `<md stem>.<row id>.min-bits.{svg,png}` beside `md` for every row with search
/// data; returns the file names per row, for the report to link.
pub fn write_row_plots(report: &Report, md: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let dir = md.parent().unwrap_or(Path::new(""));
    let stem = md
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let mut out = BTreeMap::new();
    for r in &report.rows {
        let Some(plot) = min_bits_plot(r) else {
            continue;
        };
        let svg = format!("{stem}.{}.min-bits.svg", r.id);
        let png = format!("{stem}.{}.min-bits.png", r.id);
        report::write_atomic(&dir.join(&svg), to_svg(&plot).as_bytes())?;
        report::write_atomic(&dir.join(&png), &raster::to_png(&plot))?;
        out.insert(r.id.clone(), vec![svg, png]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::min_bits::{MinBits, Trial};

    pub(crate) fn searched_row() -> RowReport {
        let mut r: RowReport = serde_json::from_value(serde_json::json!({
            "id": "r", "name": null, "family": "bert_seqcls", "task": "glue/sst2", "model": "m",
            "model_sha256": null, "seq_len": 8, "n_bits": 37, "frac_bits": 12, "train_size": null,
            "val_size": 10, "examples": 10, "skipped": false, "skip_reason": null,
            "float": {"acc": 0.8, "acc_pct": 80.0, "runtime_s": 0.0}, "suf": {},
            "sigma_ref": {"pytorch_acc": 0.5, "sigma_acc": 0.5, "bitwidth": 37, "train_size": null, "val_size": 10},
            "delta_pp": {}, "float_sigma_pp": null, "notes": null, "resume_key": "k", "counts": null, "wall_s": 0.0
        }))
        .unwrap();
        let trial = |n: u32, acc: f64| Trial {
            n_bits: n,
            acc,
            delta_pp: (acc - 0.8) * 100.0,
            agreement: 1.0,
            within: (acc - 0.8).abs() < 1e-9,
            delta_no_wrap_pp: 0.0,
            within_no_wrap: true,
        };
        r.min_bits.insert(
            "output".into(),
            MinBits {
                frac_bits: 12,
                tolerance_pp: 0.1,
                predicted: 22,
                binding_node: None,
                binding_scale: None,
                min_bits: Some(21),
                min_bits_no_wrap: None,
                trials: vec![
                    trial(64, 0.8),
                    trial(22, 0.8),
                    trial(21, 0.8),
                    trial(20, 0.4),
                ],
                note: String::new(),
            },
        );
        r
    }

    #[test]
    fn one_point_per_trial_and_the_min_n_ringed() {
        let plot = min_bits_plot(&searched_row()).unwrap();
        let dots = plot
            .shapes
            .iter()
            .filter(|s| matches!(s, Shape::Dot { .. }))
            .count();
        assert_eq!(dots, 4);
        let rings: Vec<&Shape> = plot
            .shapes
            .iter()
            .filter(|s| matches!(s, Shape::Ring { .. }))
            .collect();
        assert_eq!(rings.len(), 1);
        let svg = to_svg(&plot);
        assert!(svg.contains("output (min n 21)"), "{svg}");
        assert!(svg.contains("float 80.00"), "{svg}");
        let mut unsearched = searched_row();
        unsearched.min_bits.clear();
        assert!(min_bits_plot(&unsearched).is_none());
    }
}
