//! The pictures: loss and accuracy per epoch, the confusion heat map, the top-5 bar
//! chart and a photo titled with its prediction. Text uses the embedded font.

use std::path::Path;

use anyhow::Result;
use image::RgbImage;
use plotters::prelude::*;
use rps_core::plot::{FONT, render_png};

use crate::metrics::Confusion;

/// One line of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

/// Lines over epochs, with a dashed vertical line where fine-tuning starts.
pub fn epoch_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
    finetune_starts: Option<f64>,
) -> Result<()> {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .collect();
    let x_max = xs.fold(1.0f64, f64::max);
    let y_max = ys.iter().copied().fold(f64::MIN, f64::max).max(1e-6) * 1.05;
    let y_min = ys.iter().copied().fold(f64::MAX, f64::min).min(0.0);
    render_png(path, 900, 560, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0.5..x_max + 0.5, y_min..y_max)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_label)
            .label_style((FONT, 15))
            .draw()?;
        for s in series {
            let color = s.color;
            chart
                .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))?
                .label(s.name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        if let Some(x) = finetune_starts {
            let style = BLACK.mix(0.6).stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new([(x, y_min), (x, y_max)], 8, 6, style))?
                .label("fine-tuning starts")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 15))
            .draw()?;
        Ok(())
    })?;
    Ok(())
}

/// A heat map of the confusion matrix with the count in each cell.
pub fn confusion_chart(path: &Path, confusion: &Confusion, classes: &[String]) -> Result<()> {
    use plotters::coord::ranged1d::SegmentValue;
    let n = classes.len();
    let max = confusion
        .counts
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let name = |v: &SegmentValue<usize>, flip: bool| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) if *i < n => {
            classes[if flip { n - 1 - i } else { *i }].clone()
        }
        _ => String::new(),
    };
    render_png(path, 640, 600, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption("Confusion matrix (test)", (FONT, 22))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(90)
            // A segmented 0..k has k + 1 cells.
            .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(n)
            .y_labels(n)
            .x_label_formatter(&|v| name(v, false))
            .y_label_formatter(&|v| name(v, true))
            .label_style((FONT, 15))
            .draw()?;
        for (t, row) in confusion.counts.iter().enumerate() {
            for (p, &count) in row.iter().enumerate() {
                let share = count as f64 / max;
                let shade = (255.0 * (1.0 - 0.8 * share)) as u8;
                let y = n - 1 - t;
                let cell = [
                    (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
                ];
                chart.draw_series([Rectangle::new(cell, RGBColor(shade, shade, 255).filled())])?;
                let text_color = if share > 0.6 { WHITE } else { BLACK };
                let style = TextStyle::from((FONT, 22).into_font())
                    .color(&text_color)
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ));
                chart.draw_series([Text::new(
                    count.to_string(),
                    (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)),
                    style,
                )])?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// Horizontal bars of the top classes with their probabilities (the recipe's top-5).
pub fn bar_chart(path: &Path, title: &str, bars: &[(String, f32)]) -> Result<()> {
    let n = bars.len().max(1);
    render_png(path, 800, 120 + 50 * n as u32, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(220)
            .build_cartesian_2d(0f32..1f32, 0..n)?;
        let label = |i: &usize| {
            bars.get(n - 1 - *i)
                .map(|b| b.0.clone())
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("probability")
            .y_labels(n)
            .y_label_formatter(&label)
            .label_style((FONT, 15))
            .draw()?;
        for (i, (_, p)) in bars.iter().enumerate() {
            let y = n - 1 - i;
            chart.draw_series([Rectangle::new(
                [(0.0, y), (*p, y + 1)],
                BLUE.mix(0.6).filled(),
            )])?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The photo with its prediction as the title.
pub fn titled_image(path: &Path, picture: &RgbImage, title: &str) -> Result<()> {
    rps_core::plot::image_grid(path, &[(picture.clone(), title.to_string())], 1, 400)?;
    Ok(())
}
