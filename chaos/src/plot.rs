//! A scenario's timeline as an SVG, drawn the way Jepsen's reports draw theirs: commands
//! applied per second above, command→applied latency below (log scale), each fault's window
//! shaded and labelled.

use std::fmt::Write;

use serde::Serialize;

use crate::faults::Window;

/// One second of the run.
#[derive(Debug, Clone, Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct Second {
    pub second: i64,
    pub applied: i64,
    pub p50_ms: f64,
    pub max_ms: f64,
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP_Y: f64 = 90.0;
const PANEL: f64 = 150.0;
const GAP: f64 = 50.0;

pub fn timeline(title: &str, seconds: &[Second], windows: &[Window]) -> String {
    let span = seconds
        .iter()
        .map(|s| s.second as f64 + 1.0)
        .chain(windows.iter().map(|w| w.end))
        .fold(10.0_f64, f64::max)
        .ceil();
    let x = |t: f64| LEFT + (WIDTH - LEFT - RIGHT) * (t / span);
    let height = TOP_Y + 2.0 * PANEL + GAP + 50.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="20" font-size="15" font-weight="bold">{}</text>
"##,
        escape(title)
    );
    // fault windows, across both panels, labels staggered over three rows
    let bottom = TOP_Y + 2.0 * PANEL + GAP;
    for (i, w) in windows.iter().enumerate() {
        let (x0, x1) = (x(w.start), x(w.end).max(x(w.start) + 2.0));
        let label_y = 36.0 + 14.0 * (i % 4) as f64;
        // near the right edge the label ends at the window instead of starting there
        let anchor = if x0 > WIDTH - 200.0 { "end" } else { "start" };
        let _ = write!(
            svg,
            r##"<rect x="{x0:.1}" y="{TOP_Y}" width="{:.1}" height="{:.1}" fill="#e4572e" fill-opacity="0.18"/>
<line x1="{x0:.1}" y1="{:.1}" x2="{x0:.1}" y2="{TOP_Y}" stroke="#e4572e" stroke-width="0.6"/>
<text x="{x0:.1}" y="{label_y:.1}" fill="#a8321a" text-anchor="{anchor}">{}</text>
"##,
            x1 - x0,
            bottom - TOP_Y,
            label_y + 2.0,
            escape(&w.label)
        );
    }
    // panel 1: applied per second
    let max_applied = seconds.iter().map(|s| s.applied).max().unwrap_or(1).max(1) as f64;
    panel(
        &mut svg,
        TOP_Y,
        "commands applied / s",
        max_applied,
        false,
        span,
        &x,
    );
    // a second in which nothing was applied is a zero, not a gap
    let last = seconds.last().map_or(0, |s| s.second);
    let applied: std::collections::HashMap<i64, i64> =
        seconds.iter().map(|s| (s.second, s.applied)).collect();
    let points: Vec<(f64, f64)> = (0..=last)
        .map(|t| (t as f64 + 0.5, applied.get(&t).copied().unwrap_or(0) as f64))
        .collect();
    polyline(
        &mut svg,
        &points,
        &x,
        |v| TOP_Y + PANEL - PANEL * v / max_applied,
        "#1d6fa5",
    );
    // panel 2: latency, log scale from 1 ms
    let y2 = TOP_Y + PANEL + GAP;
    let max_ms = seconds.iter().map(|s| s.max_ms).fold(10.0, f64::max);
    let log_top = max_ms.log10().ceil().max(1.0);
    let ly = |ms: f64| y2 + PANEL - PANEL * (ms.max(1.0).log10() / log_top);
    panel(
        &mut svg,
        y2,
        "command → applied, ms (log)",
        log_top,
        true,
        span,
        &x,
    );
    // latency exists only for seconds that applied something: one line per run of them
    for run in seconds.chunk_by(|a, b| b.second == a.second + 1) {
        let max: Vec<(f64, f64)> = run
            .iter()
            .map(|s| (s.second as f64 + 0.5, s.max_ms))
            .collect();
        let p50: Vec<(f64, f64)> = run
            .iter()
            .map(|s| (s.second as f64 + 0.5, s.p50_ms))
            .collect();
        polyline(&mut svg, &max, &x, ly, "#f2a541");
        polyline(&mut svg, &p50, &x, ly, "#2a9d55");
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" fill="#2a9d55">median</text><text x="{:.1}" y="{:.1}" fill="#f2a541">max</text>
<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since the load started</text>
</svg>
"##,
        WIDTH - RIGHT - 80.0,
        y2 - 6.0,
        WIDTH - RIGHT - 30.0,
        y2 - 6.0,
        (LEFT + WIDTH - RIGHT) / 2.0,
        bottom + 35.0
    );
    svg
}

fn panel(
    svg: &mut String,
    y: f64,
    name: &str,
    top: f64,
    log: bool,
    span: f64,
    x: &impl Fn(f64) -> f64,
) {
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{y}" width="{:.1}" height="{PANEL}" fill="none" stroke="#888"/>
<text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>
"##,
        WIDTH - LEFT - RIGHT,
        y - 6.0,
        escape(name)
    );
    let ticks = if log { top as u32 } else { 4 };
    for i in 0..=ticks {
        let fraction = f64::from(i) / f64::from(ticks);
        let value = if log {
            let ms = 10f64.powf(top * fraction);
            if ms >= 1000.0 {
                format!("{:.0} s", ms / 1000.0)
            } else {
                format!("{ms:.0}")
            }
        } else {
            format!("{:.0}", top * fraction)
        };
        let ty = y + PANEL - PANEL * fraction;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{value}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            ty + 4.0
        );
    }
    let step = [5.0, 10.0, 15.0, 30.0, 60.0, 120.0]
        .into_iter()
        .find(|s| span / s <= 12.0)
        .unwrap_or(300.0);
    let mut t = 0.0;
    while t <= span {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0}</text>"##,
            x(t),
            y + PANEL + 14.0
        );
        t += step;
    }
}

fn polyline(
    svg: &mut String,
    points: &[(f64, f64)],
    x: &impl Fn(f64) -> f64,
    y: impl Fn(f64) -> f64,
    colour: &str,
) {
    let path: Vec<String> = points
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect();
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"##,
        path.join(" ")
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
