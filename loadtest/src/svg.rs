//! Hand-drawn inline SVG charts for the HTML report: line charts with several series and bar
//! histograms, with axes and "nice" ticks. No script and nothing fetched, so the report is one
//! self-contained file that opens anywhere.

use std::fmt::Write;

const W: f64 = 860.0;
const H: f64 = 280.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 46.0;

pub const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// A named series of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Dots instead of a line (for scattered observations).
    pub dots: bool,
}

impl Series {
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points, dots: false }
    }
    pub fn dots(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points, dots: true }
    }
}

/// Escapes text for SVG/HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A tick step of 1, 2 or 5 times a power of ten giving about `target` ticks over `range`.
pub fn nice_step(range: f64, target: f64) -> f64 {
    if !(range.is_finite() && range > 0.0) {
        return 1.0;
    }
    let raw = range / target.max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let f = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * mag
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.abs() >= 100.0 || (v.fract() == 0.0) {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.001 {
        format!("{v:.4}").trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{v:.1e}")
    }
}

struct Frame {
    x0: f64,
    x1: f64,
    y1: f64,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x0) / (self.x1 - self.x0).max(f64::MIN_POSITIVE) * (W - LEFT - RIGHT)
    }
    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - (y / self.y1.max(f64::MIN_POSITIVE)) * (H - TOP - BOTTOM)
    }
}

fn axes(out: &mut String, f: &Frame, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(out, r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="11">"#);
    let _ = write!(out, r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}</text>"#, esc(title));
    let xs = nice_step(f.x1 - f.x0, 8.0);
    let mut x = (f.x0 / xs).ceil() * xs;
    while x <= f.x1 + xs * 1e-9 {
        let px = f.px(x);
        let _ = write!(out, r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##, TOP, H - BOTTOM, H - BOTTOM + 14.0, fmt_num(x));
        x += xs;
    }
    let ys = nice_step(f.y1, 5.0);
    let mut y = 0.0;
    while y <= f.y1 + ys * 1e-9 {
        let py = f.py(y);
        let _ = write!(out, r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##, W - RIGHT, LEFT - 6.0, py + 4.0, fmt_num(y));
        y += ys;
    }
    let _ = write!(out, r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#333"/>"##, H - BOTTOM, W - RIGHT, H - BOTTOM, H - BOTTOM);
    let _ = write!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, (LEFT + W - RIGHT) / 2.0, H - 8.0, esc(x_label));
    let _ = write!(out, r#"<text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"#, (TOP + H - BOTTOM) / 2.0, (TOP + H - BOTTOM) / 2.0, esc(y_label));
}

/// A line chart; an empty one says there was nothing to draw.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let all = series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0_f64);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        return format!(r#"<p class="empty">{}: no data.</p>"#, esc(title));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let ys = nice_step(if y1 > 0.0 { y1 } else { 1.0 }, 5.0);
    let f = Frame { x0, x1, y1: (y1 / ys).ceil().max(1.0) * ys };
    let mut out = String::new();
    axes(&mut out, &f, title, x_label, y_label);
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        if s.dots {
            for (x, y) in pts {
                let _ = write!(out, r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{color}" fill-opacity="0.5"/>"#, f.px(x), f.py(y));
            }
        } else {
            let path: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y))).collect();
            let _ = write!(out, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#, path.join(" "));
        }
        let lx = LEFT + 10.0 + i as f64 * 190.0;
        let _ = write!(out, r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#, TOP - 8.0, lx + 14.0, TOP + 1.0, esc(&s.name));
    }
    out.push_str("</svg>");
    out
}

/// A histogram from (low, high, count) bins.
pub fn bar_chart(title: &str, x_label: &str, y_label: &str, bins: &[(f64, f64, f64)]) -> String {
    if bins.is_empty() {
        return format!(r#"<p class="empty">{}: no data.</p>"#, esc(title));
    }
    let x0 = bins.first().map_or(0.0, |b| b.0);
    let x1 = bins.last().map_or(1.0, |b| b.1).max(x0 + f64::EPSILON);
    let y1 = bins.iter().map(|b| b.2).fold(0.0, f64::max);
    let ys = nice_step(if y1 > 0.0 { y1 } else { 1.0 }, 5.0);
    let f = Frame { x0, x1, y1: (y1 / ys).ceil().max(1.0) * ys };
    let mut out = String::new();
    axes(&mut out, &f, title, x_label, y_label);
    for &(lo, hi, c) in bins {
        let (x, w) = (f.px(lo), (f.px(hi) - f.px(lo) - 1.0).max(0.5));
        let y = f.py(c);
        let _ = write!(out, r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"><title>{}–{}: {c}</title></rect>"#, (H - BOTTOM - y).max(0.0), COLORS[0], fmt_num(lo), fmt_num(hi));
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        assert_eq!(nice_step(0.9, 5.0), 0.2);
        assert_eq!(nice_step(0.0, 5.0), 1.0);
        assert_eq!((fmt_num(0.25), fmt_num(0.0005), fmt_num(12_500.0), fmt_num(3.0)), ("0.25".into(), "5.0e-4".into(), "12k".into(), "3".into()));
    }

    #[test]
    fn charts_are_self_contained_svg() {
        let svg = line_chart("Queue <length>", "s", "visitors", &[Series::line("gauge", vec![(0.0, 1.0), (1.0, 5.0)]), Series::dots("seen", vec![(0.5, 2.0)])]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("Queue &lt;length&gt;"));
        assert!(svg.contains("<polyline") && svg.contains("<circle"));
        assert!(!svg.contains("<script") && !svg.contains("href"));
        let bars = bar_chart("Waits", "s", "visitors", &[(0.0, 1.0, 3.0), (1.0, 2.0, 0.0)]);
        assert_eq!(bars.matches("<rect x=").count(), 2);
        assert!(line_chart("Empty", "x", "y", &[]).contains("no data"));
    }
}
