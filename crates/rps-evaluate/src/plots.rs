//! The pictures: loss and accuracy per epoch, the confusion heat map, the top-5 bar
//! chart beside its photo, and a photo titled with its prediction. Every string goes
//! through `rps_plot::drawable` (the embedded font's glyphs only).

use std::path::Path;

use anyhow::Result;
use image::RgbImage;
use plotters::coord::ranged1d::{SegmentValue, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use rps_plot::{FONT, Tile, draw_picture, drawable, render_png, text_style};

use crate::metrics::Confusion;

/// One line of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    /// Its runs of points, each drawn as one line: a gap between runs.
    pub runs: Vec<Vec<(f64, f64)>>,
    pub color: RGBColor,
    /// Dashed, so that a line it covers still shows.
    pub dashed: bool,
}

/// Width of the strip right of an epoch chart that holds its legend.
pub const LEGEND_WIDTH: u32 = 170;

/// The lines of an epoch chart, in order (train, test, validation).
pub const SERIES_COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

/// An epoch chart's y axis, with its label.
pub enum YAxis<'a> {
    /// Linear from 0 (or below), labelled with two decimals.
    Linear(&'a str),
    /// Logarithmic over positive values (learning rates), labelled as they are
    /// (1e-4), as the learning-rate finder's plots are.
    Log(&'a str),
}

/// Lines over epochs (integer ticks), the legend beside the plot, and a dashed line
/// labelled where fine-tuning starts.
pub fn epoch_chart(
    path: &Path,
    title: &str,
    y_axis: YAxis,
    series: &[Series],
    finetune_starts: Option<f64>,
) -> Result<()> {
    let points = || series.iter().flat_map(|s| s.runs.iter().flatten());
    let x_max = points().map(|p| p.0).fold(1.0f64, f64::max);
    let ys: Vec<f64> = points().map(|p| p.1).filter(|y| y.is_finite()).collect();
    let (y_low, y_high) = ys
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &y| (lo.min(y), hi.max(y)));
    let (width, height) = (900, 560);
    render_png(path, width, height, |root| {
        let (plot_area, legend_area) = root.split_horizontally(width - LEGEND_WIDTH);
        let mut builder = ChartBuilder::on(&plot_area);
        builder
            .caption(drawable(title), (FONT, 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65);
        let x_range = 0.5..x_max + 0.5;
        match y_axis {
            YAxis::Linear(label) => {
                let y_max = y_high.max(1e-6) * 1.05;
                let y_min = y_low.min(0.0);
                let chart = builder.build_cartesian_2d(x_range, y_min..y_max)?;
                let ticks = |y: &f64| drawable(&format!("{y:.2}"));
                draw_epochs(
                    chart,
                    (label, &ticks),
                    (y_min, y_max),
                    series,
                    finetune_starts,
                )?;
            }
            YAxis::Log(label) => {
                // A factor of 3 each way keeps a constant rate off the frame.
                let positive = y_low > 0.0 && y_low.is_finite();
                let (y_min, y_max) = match positive {
                    true => (y_low / 3.0, y_high * 3.0),
                    false => (1e-8, 1.0),
                };
                let y_range = (y_min..y_max).log_scale();
                let chart = builder.build_cartesian_2d(x_range, y_range)?;
                let ticks = |y: &f64| drawable(&format!("{y:.0e}"));
                draw_epochs(
                    chart,
                    (label, &ticks),
                    (y_min, y_max),
                    series,
                    finetune_starts,
                )?;
            }
        }
        let label = text_style(16, HPos::Left, VPos::Center);
        for (i, s) in series.iter().enumerate() {
            let y = 80 + 30 * i as i32;
            let (ends, style) = ([(10, y), (40, y)], s.color.stroke_width(3));
            match s.dashed {
                true => legend_area.draw(&DashedPathElement::new(ends, 8, 5, style))?,
                false => legend_area.draw(&PathElement::new(ends, style))?,
            }
            legend_area.draw_text(&drawable(s.name), &label, (50, y))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// An epoch chart's mesh (`y_ticks` formats the y axis's labels), its lines, and
/// the fine-tuning marker spanning `y_min..y_max`.
fn draw_epochs<DB, Y>(
    mut chart: ChartContext<DB, Cartesian2d<RangedCoordf64, Y>>,
    (y_label, y_ticks): (&str, &dyn Fn(&f64) -> String),
    (y_min, y_max): (f64, f64),
    series: &[Series],
    finetune_starts: Option<f64>,
) -> Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let x_max = chart.x_range().end - 0.5;
    // At most one tick an epoch, so that each falls on a whole epoch.
    chart
        .configure_mesh()
        .x_labels((x_max as usize).min(12))
        .x_desc(drawable("epoch"))
        .y_desc(drawable(y_label))
        .x_label_formatter(&|x| drawable(&epoch_tick(*x)))
        .y_label_formatter(y_ticks)
        .label_style((FONT, 15))
        .draw()?;
    for s in series {
        let style = s.color.stroke_width(2);
        for run in &s.runs {
            match (run.as_slice(), s.dashed) {
                // A one-epoch phase has no line to draw: a dot, smaller for the
                // dashed series so that one under it still shows.
                ([point], dashed) => {
                    let radius = if dashed { 2 } else { 4 };
                    chart.draw_series([Circle::new(*point, radius, style.filled())])?
                }
                (_, true) => chart.draw_series(DashedLineSeries::new(run.clone(), 10, 8, style))?,
                (_, false) => chart.draw_series(LineSeries::new(run.clone(), style))?,
            };
        }
    }
    if let Some(x) = finetune_starts {
        let style = BLACK.mix(0.6).stroke_width(1);
        chart.draw_series(DashedLineSeries::new([(x, y_min), (x, y_max)], 8, 6, style))?;
        let label = text_style(15, HPos::Left, VPos::Top);
        // Just under the top, on either axis.
        let top = y_max - (y_max - y_min) * 0.01;
        let top = if top > y_min { top } else { y_max };
        chart.draw_series([Text::new(drawable(" fine-tuning"), (x, top), label)])?;
    }
    Ok(())
}

/// An epoch tick's label: whole epochs only.
fn epoch_tick(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        String::new()
    }
}

/// A heat map of the confusion matrix with the count in each cell.
pub fn confusion_chart(path: &Path, confusion: &Confusion, classes: &[String]) -> Result<()> {
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
            drawable(&classes[if flip { n - 1 - i } else { *i }])
        }
        _ => String::new(),
    };
    render_png(path, 640, 600, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(drawable("Confusion matrix (test)"), (FONT, 22))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(90)
            // A segmented 0..k has k + 1 cells.
            .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(drawable("predicted"))
            .y_desc(drawable("true"))
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
                let style = text_style(22, HPos::Center, VPos::Center).color(&text_color);
                chart.draw_series([Text::new(
                    drawable(&count.to_string()),
                    (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)),
                    style,
                )])?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// Pixels of the photo beside a bar chart.
const PHOTO: u32 = 300;

/// The recipe's top-k figure: the photo, and beside it one horizontal bar per class
/// (best first, each centred on its label) with its probability at the bar's end.
pub fn bar_chart(path: &Path, title: &str, photo: &RgbImage, bars: &[(String, f32)]) -> Result<()> {
    let n = bars.len().max(1);
    let height = (120 + 50 * n as u32).max(PHOTO + 80);
    render_png(path, 820 + PHOTO, height, |root| {
        let (photo_area, chart_area) = root.split_horizontally(PHOTO + 20);
        draw_picture(&photo_area, photo, (15, 60), PHOTO)?;
        let mut chart = ChartBuilder::on(&chart_area)
            .caption(drawable(title), (FONT, 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(220)
            .build_cartesian_2d(0f32..1.1f32, (0..n - 1).into_segmented())?;
        // Segment i holds the bar of rank n - 1 - i: the best on top.
        let label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < n => bars
                .get(n - 1 - i)
                .map(|b| drawable(&b.0))
                .unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(drawable("probability"))
            .x_label_formatter(&|x| drawable(&format!("{x:.1}")))
            .y_labels(n)
            .y_label_formatter(&label)
            .label_style((FONT, 15))
            .draw()?;
        let value = text_style(15, HPos::Left, VPos::Center);
        for (rank, (_, p)) in bars.iter().enumerate() {
            let y = n - 1 - rank;
            let bar = [
                (0.0, SegmentValue::Exact(y)),
                (*p, SegmentValue::Exact(y + 1)),
            ];
            let mut bar = Rectangle::new(bar, BLUE.mix(0.6).filled());
            bar.set_margin(8, 8, 0, 0);
            chart.draw_series([bar])?;
            let at = (p + 0.01, SegmentValue::CenterOf(y));
            let text = drawable(&format!("{:.1}%", 100.0 * p));
            chart.draw_series([Text::new(text, at, value.clone())])?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The photo with its prediction as the caption.
pub fn titled_image(path: &Path, picture: &RgbImage, title: &str) -> Result<()> {
    let tile = Tile {
        picture: picture.clone(),
        caption: vec![title.to_string()],
    };
    rps_plot::image_grid(path, None, &[tile], 1, 400)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_ticks_are_whole() {
        assert_eq!(epoch_tick(5.0), "5");
        assert_eq!(epoch_tick(2.5), "");
    }

    /// Row intervals `[start, end)` where `is_ink` holds for some pixel in columns
    /// `xs`, top to bottom.
    fn bands(
        image: &RgbImage,
        xs: std::ops::Range<u32>,
        is_ink: impl Fn(&image::Rgb<u8>) -> bool,
    ) -> Vec<(u32, u32)> {
        let inked: Vec<bool> = (0..image.height())
            .map(|y| xs.clone().any(|x| is_ink(image.get_pixel(x, y))))
            .collect();
        let mut bands = Vec::new();
        let mut start = None;
        for (y, &ink) in inked.iter().enumerate() {
            match (ink, start) {
                (true, None) => start = Some(y as u32),
                (false, Some(s)) => {
                    bands.push((s, y as u32));
                    start = None;
                }
                _ => {}
            }
        }
        bands
    }

    #[test]
    fn each_top5_bar_sits_on_its_label_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("top5.png");
        let photo = RgbImage::from_pixel(50, 50, image::Rgb([200, 30, 30]));
        let bars: Vec<(String, f32)> = ["tabby", "tiger cat", "Egyptian cat", "lynx", "tiger"]
            .iter()
            .zip([0.5, 0.2, 0.15, 0.1, 0.05])
            .map(|(n, p)| (n.to_string(), p))
            .collect();
        bar_chart(&path, "Top 5: cat.jpg", &photo, &bars).unwrap();
        let image = image::open(&path).unwrap().to_rgb8();
        // Labels are dark text left of the plot; bars are the blue fill inside it.
        let label_x = PHOTO + 40..PHOTO + 20 + 15 + 200;
        let labels = bands(&image, label_x, |p| p.0.iter().all(|&c| c < 160));
        let bar_x = PHOTO + 20 + 15 + 225..PHOTO + 20 + 15 + 240;
        let is_bar = |p: &image::Rgb<u8>| p[2] > 200 && p[0] < 150 && p[1] < 150;
        let bars_found = bands(&image, bar_x, is_bar);
        assert_eq!(bars_found.len(), 5, "bars {bars_found:?}");
        assert_eq!(labels.len(), 5, "labels {labels:?}");
        // Each label's text rows lie inside its bar's, centred on it.
        for (bar, label) in bars_found.iter().zip(&labels) {
            let (bar_mid, label_mid) = (bar.0 + bar.1, label.0 + label.1);
            assert!(
                bar.0 <= label.0 && label.1 <= bar.1 && bar_mid.abs_diff(label_mid) <= 6,
                "bar rows {bar:?} off label rows {label:?}"
            );
        }
    }
}
