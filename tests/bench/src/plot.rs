//! SVG line plots, drawn by plotters' SVG backend (no fonts needed: SVG text is laid out
//! by the viewer).

use std::path::Path;

use plotters::prelude::*;

pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// A line chart of `series` (x and y from zero to the largest value) into `file`.
pub fn lines(
    file: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), String> {
    let max = |pick: fn(&(f64, f64)) -> f64| {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(pick))
            .fold(0.0_f64, f64::max)
            .max(1e-9)
            * 1.05
    };
    let (x_max, y_max) = (max(|p| p.0), max(|p| p.1));
    let root = SVGBackend::new(file, (800, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| e.to_string())?;
    for (index, one) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                one.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(one.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Curves against a count that grows tenfold per step (1, 10, 100, …): both axes
/// logarithmic, each measured point marked. Points at or below zero are left out (a log
/// axis has no place for them).
pub fn log_log(
    file: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), String> {
    let points = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.0 > 0.0 && p.1 > 0.0)
    };
    let x_max = points().map(|p| p.0).fold(1.0_f64, f64::max) * 1.5;
    let y_max = points().map(|p| p.1).fold(1e-3_f64, f64::max) * 1.5;
    let y_min = points().map(|p| p.1).fold(y_max, f64::min) / 1.5;
    let root = SVGBackend::new(file, (800, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0.8..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| e.to_string())?;
    for (index, one) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let kept: Vec<(f64, f64)> = one
            .points
            .iter()
            .copied()
            .filter(|p| p.0 > 0.0 && p.1 > 0.0)
            .collect();
        chart
            .draw_series(LineSeries::new(
                kept.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(one.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart
            .draw_series(kept.iter().map(|p| Circle::new(*p, 4, colour.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
