//! Minimal line charts as standalone SVG, for the reports in `docs/`.

use std::fmt::Write as _;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its legend.
    pub name: String,
    /// Its colour (any SVG colour).
    pub colour: &'static str,
    /// Its points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// A chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// Y range, if fixed.
    pub y_range: Option<(f64, f64)>,
    /// The lines.
    pub series: Vec<Series>,
}

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn scale(v: f64, log: bool) -> f64 {
    if log { v.max(1e-12).log10() } else { v }
}

fn label(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Ticks for an axis over `lo..=hi` (in data units).
fn ticks(lo: f64, hi: f64, log: bool, xs: &[f64]) -> Vec<f64> {
    if !xs.is_empty() {
        return xs.to_vec();
    }
    if log {
        let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        (a..=b).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=5)
            .map(|i| lo + (hi - lo) * f64::from(i) / 5.0)
            .collect()
    }
}

impl Chart {
    /// The chart as an SVG document; x ticks at the data's x values.
    pub fn render(&self) -> String {
        let xs: Vec<f64> = {
            let mut xs: Vec<f64> = self
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.0))
                .collect();
            xs.sort_by(f64::total_cmp);
            xs.dedup();
            xs
        };
        let ys: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .collect();
        let (x_lo, x_hi) = (
            xs.first().copied().unwrap_or(0.0),
            xs.last().copied().unwrap_or(1.0),
        );
        let (mut y_lo, mut y_hi) = self.y_range.unwrap_or_else(|| {
            let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (if self.log_y { lo } else { lo.min(0.0) }, hi)
        });
        if self.log_y {
            y_lo = 10f64.powf(y_lo.max(1e-12).log10().floor());
            y_hi = 10f64.powf(y_hi.max(1e-12).log10().ceil());
        }
        if y_hi <= y_lo {
            y_hi = y_lo + 1.0;
        }
        let (sx_lo, sx_hi) = (scale(x_lo, self.log_x), scale(x_hi, self.log_x));
        let (sy_lo, sy_hi) = (scale(y_lo, self.log_y), scale(y_hi, self.log_y));
        let px = |x: f64| {
            let span = (sx_hi - sx_lo).max(1e-12);
            LEFT + (scale(x, self.log_x) - sx_lo) / span * (W - LEFT - RIGHT)
        };
        let py = |y: f64| {
            let span = (sy_hi - sy_lo).max(1e-12);
            H - BOTTOM - (scale(y, self.log_y) - sy_lo) / span * (H - TOP - BOTTOM)
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
             viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">"
        );
        let _ = writeln!(out, "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>",
            (W - RIGHT + LEFT) / 2.0,
            escape(&self.title)
        );
        for t in ticks(y_lo, y_hi, self.log_y, &[]) {
            let y = py(t);
            let _ = writeln!(
                out,
                "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                label(t)
            );
        }
        for t in ticks(x_lo, x_hi, self.log_x, &xs) {
            let x = px(t);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"#eee\"/>\
                 <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                H - BOTTOM,
                H - BOTTOM + 18.0,
                label(t)
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
             <text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">{}</text>",
            (W - RIGHT + LEFT) / 2.0,
            H - 16.0,
            escape(&self.x_label),
            (H - BOTTOM + TOP) / 2.0,
            (H - BOTTOM + TOP) / 2.0,
            escape(&self.y_label)
        );
        for (i, s) in self.series.iter().enumerate() {
            let path: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
                s.colour,
                path.join(" ")
            );
            for &(x, y) in &s.points {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                    px(x),
                    py(y),
                    s.colour
                );
            }
            let ly = TOP + 10.0 + 20.0 * i as f64;
            let _ = writeln!(
                out,
                "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"3\"/>\
                 <text x=\"{}\" y=\"{}\">{}</text>",
                W - RIGHT + 12.0,
                W - RIGHT + 32.0,
                s.colour,
                W - RIGHT + 38.0,
                ly + 4.0,
                escape(&s.name)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_point_and_legend() {
        let chart = Chart {
            title: "t <1>".into(),
            x_label: "N".into(),
            y_label: "tokens".into(),
            log_x: true,
            log_y: true,
            y_range: None,
            series: vec![Series {
                name: "a".into(),
                colour: "red",
                points: vec![(3.0, 10.0), (20.0, 1000.0)],
            }],
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"));
    }
}
