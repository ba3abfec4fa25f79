//! The soak's PNG: RSS (left axis, MiB) and live members (right axis) against minutes.
//!
//! Drawn with `plotters`' bitmap backend, which needs no system library. Text is rendered
//! with `ab_glyph` from a TrueType font read at run time (`RGAP_BENCH_FONT`, or DejaVu Sans
//! or Liberation Sans where Debian puts them); without one the plot is drawn without text.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// One observation of the listener.
pub struct Sample {
    /// Since the churn started.
    pub at: Duration,
    pub rss_kib: u64,
    /// CPU used since the listener started.
    pub cpu: Duration,
    pub live: usize,
}

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers a font as "sans-serif" once; true if one was found.
fn font_registered() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let chosen = std::env::var("RGAP_BENCH_FONT").ok();
        let candidates = chosen.iter().map(String::as_str).chain(FONTS.iter().copied());
        for path in candidates {
            let Ok(bytes) = std::fs::read(path) else { continue };
            // The font lives as long as the process: plotters keeps a reference to it.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        false
    })
}

/// Writes the plot of `samples` to `path`; returns whether it has text.
pub fn plot(
    path: &Path,
    title: &str,
    samples: &[Sample],
) -> Result<bool, Box<dyn std::error::Error>> {
    let text = font_registered();
    let minutes = |sample: &Sample| sample.at.as_secs_f64() / 60.0;
    let end = samples.last().map_or(1.0, minutes).max(1.0 / 6.0);
    let rss_top = samples.iter().map(|s| s.rss_kib as f64 / 1024.0).fold(1.0, f64::max) * 1.15;
    let live_top = samples.iter().map(|s| s.live as f64).fold(10.0, f64::max) * 1.15;

    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder.caption(title, ("sans-serif", 22)).x_label_area_size(45).y_label_area_size(70);
        builder.right_y_label_area_size(80);
    } else {
        builder.x_label_area_size(5).y_label_area_size(5).right_y_label_area_size(5);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..end, 0.0..rss_top)?
        .set_secondary_coord(0.0..end, 0.0..live_top);
    let rss_colour = RGBColor(200, 40, 40);
    let live_colour = RGBColor(40, 90, 200);
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("minutes").y_desc("RSS (MiB)").label_style(("sans-serif", 15));
        mesh.y_label_formatter(&|m| format!("{m:.0}"));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    if text {
        chart
            .configure_secondary_axes()
            .y_desc("live members")
            .y_label_formatter(&|n| format!("{n:.0}"))
            .label_style(("sans-serif", 15))
            .draw()?;
    }
    let rss = samples.iter().map(|s| (minutes(s), s.rss_kib as f64 / 1024.0));
    let series = chart.draw_series(LineSeries::new(rss, rss_colour.stroke_width(2)))?;
    if text {
        series.label("RSS (MiB, left)").legend(move |(x, y)| {
            PathElement::new([(x, y), (x + 20, y)], rss_colour.stroke_width(2))
        });
    }
    let live = samples.iter().map(|s| (minutes(s), s.live as f64));
    let series = chart.draw_secondary_series(LineSeries::new(live, live_colour.stroke_width(1)))?;
    if text {
        series.label("live members (right)").legend(move |(x, y)| {
            PathElement::new([(x, y), (x + 20, y)], live_colour.stroke_width(2))
        });
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
    }
    root.present()?;
    Ok(text)
}
