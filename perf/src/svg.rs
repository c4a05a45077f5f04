//! A small SVG line-chart writer (no dependencies): axes with ticks, one polyline + point
//! markers per series, a legend. Used for rate vs frame size and latency CDFs.

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// "Nice" tick positions (1, 2, 5 × 10^k) covering [lo, hi].
pub fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    let mut out = Vec::new();
    let mut v = first;
    while v <= hi + step * 1e-9 && out.len() < 50 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    out
}

fn label(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A line chart; `step` draws each series as a staircase (for CDFs). Series without finite
/// points are listed in the legend as "(no data)".
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    step: bool,
) -> String {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().filter(finite).copied())
        .collect();
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, f64::MIN);
    for (x, y) in &all {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y1 = y1.max(*y);
    }
    if all.is_empty() {
        (x0, x1, y1) = (0.0, 1.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y0 = 0.0;
    if y1 <= y0 {
        y1 = 1.0;
    }
    y1 *= 1.05;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
    let mut o = String::new();
    o.push_str(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    ));
    o.push_str(&format!(
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n"
    ));
    o.push_str(&format!(
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        LEFT + pw / 2.0,
        esc(title)
    ));
    // axes and grid
    for t in ticks(y0, y1, 6) {
        let y = sy(t);
        o.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            label(t)
        ));
    }
    for t in ticks(x0, x1, 8) {
        let x = sx(t);
        o.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>\n<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            TOP + ph,
            TOP + ph + 5.0,
            TOP + ph + 18.0,
            label(t)
        ));
    }
    o.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"black\"/>\n<line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n",
        TOP + ph,
        TOP + ph,
        LEFT + pw,
        TOP + ph
    ));
    o.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
        LEFT + pw / 2.0,
        H - 12.0,
        esc(x_label)
    ));
    o.push_str(&format!(
        "<text x=\"16\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {:.1})\">{}</text>\n",
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(y_label)
    ));
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().filter(finite).copied().collect();
        let mut path: Vec<(f64, f64)> = Vec::new();
        for (j, &(x, y)) in pts.iter().enumerate() {
            if step && j > 0 {
                path.push((x, pts[j - 1].1));
            }
            path.push((x, y));
        }
        if path.len() > 1 {
            let d: Vec<String> = path
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            o.push_str(&format!(
                "<polyline class=\"data\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
                d.join(" ")
            ));
        }
        if !step || pts.len() == 1 {
            for &(x, y) in &pts {
                o.push_str(&format!(
                    "<circle class=\"data\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\"><title>{}: {} at {}</title></circle>\n",
                    sx(x),
                    sy(y),
                    esc(&s.label),
                    label(y),
                    label(x)
                ));
            }
        }
        let ly = TOP + 14.0 + i as f64 * 18.0;
        let lx = W - RIGHT + 15.0;
        let text = if pts.is_empty() {
            format!("{} (no data)", s.label)
        } else {
            s.label.clone()
        };
        o.push_str(&format!(
            "<rect x=\"{lx}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            ly - 10.0,
            lx + 18.0,
            ly,
            esc(&text)
        ));
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(64.0, 1500.0, 8);
        assert!(t.first().is_some_and(|v| *v >= 64.0));
        assert!(t.last().is_some_and(|v| *v <= 1500.0));
        assert_eq!(ticks(1.0, 1.0, 5), vec![1.0]);
    }

    #[test]
    fn chart_has_data_and_escapes() {
        let s = line_chart(
            "a <b>",
            "x",
            "y",
            &[
                Series {
                    label: "p&q".into(),
                    points: vec![(64.0, 1.0), (1500.0, 0.5)],
                },
                Series {
                    label: "empty".into(),
                    points: vec![],
                },
            ],
            false,
        );
        assert!(s.contains("<polyline class=\"data\""));
        assert_eq!(s.matches("<circle class=\"data\"").count(), 2);
        assert!(
            s.contains("a &lt;b&gt;") && s.contains("p&amp;q") && s.contains("empty (no data)")
        );
        assert!(s.trim_end().ends_with("</svg>"));
        let cdf = line_chart(
            "c",
            "ms",
            "fraction",
            &[Series {
                label: "x".into(),
                points: vec![(0.1, 0.5), (0.2, 1.0)],
            }],
            true,
        );
        // staircase: 3 vertices for two points
        assert!(cdf.contains("<polyline") && cdf.matches(',').count() >= 3);
    }
}
