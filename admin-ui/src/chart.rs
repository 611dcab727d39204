//! The dashboard's charts, drawn as SVG on the server: requests a second as bars, and the
//! latency percentiles as lines, over the timeline's buckets. The shapes live in a fixed
//! coordinate space stretched to the page's width (`preserveAspectRatio="none"`); the labels
//! are HTML beside the chart, so they keep their size on a phone.

use crate::format;
use crate::views::TimelinePoint;

/// Width of the coordinate space given to one bucket.
const STEP: f64 = 10.0;
/// Height of the coordinate space.
pub const HEIGHT: f64 = 100.0;

/// Both charts of a timeline.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// Width of the coordinate space.
    pub width: f64,
    /// Requests a second, one bar a bucket (buckets without requests have none).
    pub bars: Vec<Bar>,
    /// The highest rate, labelled.
    pub peak_rate: String,
    /// p50, p95 and p99 of latency, as polylines.
    pub lines: Vec<Line>,
    /// The highest p99, labelled.
    pub peak_latency: String,
    /// How far back the chart goes ("15 min"), labelled.
    pub span: String,
}

/// A latency line: its CSS class, its legend and how to read it off a bucket.
type Series = (
    &'static str,
    &'static str,
    fn(&TimelinePoint) -> Option<f64>,
);

/// A bar, in the coordinate space.
#[derive(Debug, Clone, Default)]
pub struct Bar {
    /// Left edge.
    pub x: String,
    /// Top edge.
    pub y: String,
    /// Width.
    pub w: String,
    /// Height.
    pub h: String,
}

/// A line, in the coordinate space.
#[derive(Debug, Clone, Default)]
pub struct Line {
    /// CSS class: `p50`, `p95`, `p99`.
    pub class: &'static str,
    /// Legend text.
    pub label: &'static str,
    /// SVG `points`.
    pub points: String,
}

impl Chart {
    /// The charts of `timeline` (oldest bucket first).
    pub fn of(timeline: &[TimelinePoint]) -> Chart {
        let width = timeline.len().max(1) as f64 * STEP;
        let rate = |p: &TimelinePoint| p.requests as f64 / STEP;
        let peak_rate = timeline.iter().map(rate).fold(0.0, f64::max);
        let bars = timeline
            .iter()
            .enumerate()
            .filter(|(_, p)| p.requests > 0)
            .map(|(i, p)| {
                let h = rate(p) / peak_rate * (HEIGHT - 2.0);
                Bar {
                    x: num(i as f64 * STEP + 1.0),
                    y: num(HEIGHT - h),
                    w: num(STEP - 2.0),
                    h: num(h),
                }
            })
            .collect();
        let peak_latency = timeline.iter().filter_map(|p| p.p99_ms).fold(0.0, f64::max);
        let series: [Series; 3] = [
            ("p50", "median", |p| p.p50_ms),
            ("p95", "95th percentile", |p| p.p95_ms),
            ("p99", "99th percentile", |p| p.p99_ms),
        ];
        // Steps: each bucket's value spans its width, so a single bucket shows too.
        let lines = series
            .into_iter()
            .map(|(class, label, value)| Line {
                class,
                label,
                points: timeline
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        let v = value(p)?;
                        let y =
                            num(HEIGHT - v / peak_latency.max(f64::MIN_POSITIVE) * (HEIGHT - 2.0));
                        let (x0, x1) = (num(i as f64 * STEP), num((i + 1) as f64 * STEP));
                        Some(format!("{x0},{y} {x1},{y}"))
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            })
            .collect();
        Chart {
            width,
            bars,
            peak_rate: format!("{peak_rate:.1}/s"),
            lines,
            peak_latency: if peak_latency > 0.0 {
                format::ms(peak_latency)
            } else {
                "–".into()
            },
            span: format::duration(timeline.first().map_or(0, |p| p.seconds_ago) + STEP as u64),
        }
    }

    /// The SVG `viewBox`.
    pub fn view_box(&self) -> String {
        format!("0 0 {} {HEIGHT}", num(self.width))
    }

    /// Whether there is anything to draw.
    pub fn is_empty(&self) -> bool {
        self.bars.is_empty()
    }
}

/// A coordinate, to two decimals at most.
fn num(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_lines_fit_the_box() {
        let point = |requests, p50| TimelinePoint {
            seconds_ago: 0,
            requests,
            errors: 0,
            p50_ms: p50,
            p95_ms: p50.map(|v| v * 2.0),
            p99_ms: p50.map(|v| v * 4.0),
        };
        let chart = Chart::of(&[point(0, None), point(50, Some(1.0)), point(100, Some(2.0))]);
        assert_eq!(chart.view_box(), "0 0 30 100");
        assert_eq!(chart.bars.len(), 2);
        assert_eq!(chart.bars[1].h, "98");
        assert_eq!(chart.bars[0].h, "49");
        assert_eq!(chart.peak_rate, "10.0/s");
        assert_eq!(chart.lines[2].points, "10,51 20,51 20,2 30,2");
        assert_eq!(chart.peak_latency, "8.00 ms");
        assert!(Chart::of(&[]).is_empty());
    }
}
