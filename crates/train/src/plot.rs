//! The run's plot: training loss and test accuracy against steps, as an SVG written at the end
//! of a run from its `metrics.jsonl`.

use crate::error::{io_err, Result, TrainError};
use plotters::prelude::*;
use std::path::Path;

/// Read `metrics.jsonl` in `run_dir` and write `metrics.svg` beside it.
pub fn write_metrics_plot(run_dir: &Path) -> Result<()> {
    let source = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&source).map_err(io_err(&source))?;
    let (mut loss, mut acc) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let step = v["step"].as_f64().unwrap_or(0.0);
        match v["kind"].as_str() {
            Some("train") => loss.extend(v["loss"].as_f64().map(|l| (step, l))),
            Some("eval") => acc.extend(v["test_accuracy"].as_f64().map(|a| (step, 100.0 * a))),
            _ => {}
        }
    }
    let out = run_dir.join("metrics.svg");
    let tmp = run_dir.join(".metrics.svg.tmp");
    draw(&tmp, &loss, &acc).map_err(|e| TrainError::Io {
        path: out.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    std::fs::rename(&tmp, &out).map_err(io_err(&out))
}

fn draw(
    path: &Path,
    loss: &[(f64, f64)],
    acc: &[(f64, f64)],
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let max_step = loss.iter().chain(acc).map(|p| p.0).fold(1.0, f64::max);

    let max_loss = loss.iter().map(|p| p.1).fold(0.1, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&left)
        .caption("training loss", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..max_step, 0.0..max_loss)?;
    chart.configure_mesh().x_desc("step").y_desc("loss").draw()?;
    chart.draw_series(LineSeries::new(loss.iter().copied(), &BLUE))?;

    let lowest = acc.iter().map(|p| p.1).fold(100.0, f64::min);
    let floor = (lowest - 5.0).clamp(0.0, 95.0);
    let mut chart = ChartBuilder::on(&right)
        .caption("test accuracy (%)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..max_step, floor..100.0)?;
    chart.configure_mesh().x_desc("step").y_desc("accuracy %").draw()?;
    chart.draw_series(LineSeries::new(acc.iter().copied(), &RED))?;
    chart.draw_series(acc.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
    root.present()?;
    Ok(())
}
