//! rps-evaluate scores the trained model on the test split into CSV files and plots;
//! [`predict`] classifies anyone's photos with `model.onnx` alone.

pub mod metrics;
pub mod plots;
pub mod predict;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use ndarray::{Array2, Axis};
use plotters::style::RGBColor;
use rps_core::rows::{EpochRow, IndexRow};
use rps_core::sidecar::{EvaluateDetails, EvaluateMeta, EvaluateSettings, Stage};
use rps_core::text::cell;
use rps_core::upstream::Upstream;
use rps_core::{
    CacheFile, ClassList, Device, Feature, GraphFile, Layout, ResultFile, SessionOptions, Split,
    Tensors, npy, table,
};
use rps_score::{Features, Scorer, predictions, softmax};
use serde::Serialize;

use metrics::Confusion;

#[derive(Debug, Clone)]
pub struct Config {
    pub layout: Layout,
    /// Images per scoring call.
    pub batch: usize,
    pub session: SessionOptions,
}

/// `summary.csv`: one metric a row.
#[derive(Debug, Serialize)]
pub struct MetricRow {
    pub metric: String,
    #[serde(with = "rps_core::text::text_cell")]
    pub value: String,
}

/// `per_class.csv`.
#[derive(Debug, Serialize)]
pub struct PerClassRow {
    #[serde(with = "rps_core::text::text_cell")]
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

pub struct Report {
    pub accuracy: f64,
    pub loss: f64,
    pub weights: PathBuf,
}

/// Up to this many misclassified images go into errors.png.
const MAX_ERRORS: usize = 16;

pub fn run(config: &Config) -> Result<Report> {
    let started = Instant::now();
    let layout = &config.layout;
    let classes = Upstream::read(layout)?.classes;
    let weights_path = chosen_weights(layout);
    let weights = npy::read_tensors(&weights_path)?;
    let scores = score_test_split(config, &weights)?;
    let confusion = Confusion::new(classes.len(), &scores.truth, &scores.predicted);
    let index = test_index(layout)?;
    write_tables(layout, &classes, &confusion, &index, &scores)?;
    let out = |file: ResultFile| layout.result(file);
    plot_epochs(layout)?;
    plots::confusion_chart(&out(ResultFile::ConfusionPlot), &confusion, classes.names())?;
    error_grid(layout, &index, &classes, &scores)?;
    let (device, loss, count) = (scores.device, scores.loss, scores.truth.len());
    let (precision, recall, f1) = confusion.macro_average();
    let summary = [
        ("accuracy", confusion.accuracy().to_string()),
        ("mean_loss", loss.to_string()),
        ("macro_precision", precision.to_string()),
        ("macro_recall", recall.to_string()),
        ("macro_f1", f1.to_string()),
        ("test_count", count.to_string()),
        (
            "model",
            "finetune_eval (layer4 + head on layer3 features)".to_string(),
        ),
        ("weights", weights_path.display().to_string()),
        ("device", device.name().to_string()),
        ("seconds", started.elapsed().as_secs_f64().to_string()),
    ]
    .map(|(metric, value)| MetricRow {
        metric: metric.into(),
        value,
    });
    let settings = EvaluateSettings {
        batch: config.batch,
    };
    let details = EvaluateDetails {
        test_images: count,
        accuracy: confusion.accuracy(),
    };
    let mut meta = EvaluateMeta::new(
        Stage::Evaluate,
        env!("CARGO_PKG_VERSION"),
        settings,
        details,
    );
    meta.inputs = [&layout.graph(GraphFile::FinetuneEval), &weights_path]
        .map(|p| p.display().to_string())
        .to_vec();
    meta.device = Some(device);
    meta.seconds = started.elapsed().as_secs_f64();
    meta.write(&out(ResultFile::EvaluateMeta))?;
    // Written last: make's sign that evaluation finished.
    table::write(&out(ResultFile::Summary), &summary)?;
    Ok(Report {
        accuracy: confusion.accuracy(),
        loss,
        weights: weights_path,
    })
}

/// The test split as the trained model scores it.
struct Scores {
    truth: Vec<usize>,
    predicted: Vec<usize>,
    /// `[images, classes]`.
    probs: Array2<f32>,
    /// Mean cross-entropy.
    loss: f64,
    device: Device,
}

/// Runs `finetune_eval.onnx` with `weights` over the test split's layer3 features.
fn score_test_split(config: &Config, weights: &Tensors) -> Result<Scores> {
    let layout = &config.layout;
    let mut scorer = Scorer::open(layout, GraphFile::FinetuneEval, config.session)?;
    let test = Features::load(layout, Split::Test, 1)?;
    let graph = layout.graph(GraphFile::FinetuneEval);
    test.check_fits(Feature::Layer3, &scorer.features_dims()?, &graph)?;
    let rows: Vec<usize> = (0..test.labels.len()).collect();
    let mut probs = Vec::new();
    let mut loss_sum = 0.0f64;
    for chunk in rows.chunks(config.batch.max(1)) {
        let labels = test.labels_of(chunk);
        let out = scorer.score(&test.rows(Feature::Layer3, chunk)?, &labels, weights)?;
        loss_sum += out.loss as f64 * chunk.len() as f64;
        probs.push(softmax(&out.logits));
    }
    let views: Vec<_> = probs.iter().map(|p| p.view()).collect();
    let probs = ndarray::concatenate(Axis(0), &views)?;
    Ok(Scores {
        truth: test.labels.iter().map(|&l| l as usize).collect(),
        predicted: predictions(probs.view()),
        probs,
        loss: loss_sum / rows.len().max(1) as f64,
        device: scorer.device,
    })
}

/// `best.npz` when training held out a validation split, else the last epoch's.
fn chosen_weights(layout: &Layout) -> PathBuf {
    let best = layout.result(ResultFile::Best);
    if best.exists() {
        best
    } else {
        layout.result(ResultFile::Weights)
    }
}

fn test_index(layout: &Layout) -> Result<Vec<IndexRow>> {
    let rows: Vec<IndexRow> = table::read(&layout.cache(CacheFile::Index))?;
    let mut test: Vec<IndexRow> = rows
        .into_iter()
        .filter(|r| r.split == Split::Test)
        .collect();
    test.sort_by_key(|r| r.row);
    Ok(test)
}

fn write_tables(
    layout: &Layout,
    classes: &ClassList,
    confusion: &Confusion,
    index: &[IndexRow],
    scores: &Scores,
) -> Result<()> {
    let (truth, predicted) = (&scores.truth, &scores.predicted);
    let per_class: Vec<PerClassRow> = confusion
        .per_class()
        .iter()
        .zip(classes.names())
        .map(|(s, class)| PerClassRow {
            class: class.clone(),
            precision: s.precision,
            recall: s.recall,
            f1: s.f1,
            support: s.support,
        })
        .collect();
    table::write(&layout.result(ResultFile::PerClass), &per_class)?;

    let names: Vec<String> = classes.names().iter().map(|c| cell(c).into()).collect();
    let mut header = vec!["true".to_string()];
    header.extend(names.iter().cloned());
    let rows: Vec<Vec<String>> = confusion
        .counts
        .iter()
        .zip(&names)
        .map(|(counts, class)| {
            std::iter::once(class.clone())
                .chain(counts.iter().map(usize::to_string))
                .collect()
        })
        .collect();
    table::write_records(&layout.result(ResultFile::Confusion), &header, &rows)?;

    let mut header: Vec<String> = ["path", "true", "pred"].map(String::from).to_vec();
    header.extend(classes.names().iter().map(|c| format!("p_{c}")));
    header.push("correct".into());
    let rows: Vec<Vec<String>> = (0..truth.len())
        .map(|i| {
            let path = index
                .get(i)
                .map_or_else(|| format!("row {i}"), |r| r.path.clone());
            let mut row = vec![
                cell(&path).into(),
                names[truth[i]].clone(),
                names[predicted[i]].clone(),
            ];
            row.extend(scores.probs.row(i).iter().map(|p| p.to_string()));
            row.push((truth[i] == predicted[i]).to_string());
            row
        })
        .collect();
    table::write_records(&layout.result(ResultFile::Predictions), &header, &rows)?;
    Ok(())
}

fn plot_epochs(layout: &Layout) -> Result<()> {
    let epochs: Vec<EpochRow> = table::read(&layout.result(ResultFile::Epochs))?;
    let finetune = epochs
        .iter()
        .find(|r| r.phase == "finetune")
        .map(|r| r.epoch as f64 - 0.5);
    let line = |f: fn(&EpochRow) -> f64| {
        epochs
            .iter()
            .map(|r| (r.epoch as f64, f(r)))
            .collect::<Vec<_>>()
    };
    let (blue, orange) = (RGBColor(31, 119, 180), RGBColor(255, 127, 14));
    type Metric = fn(&EpochRow) -> f64;
    let charts: [(ResultFile, &str, &str, Metric, Metric); 2] = [
        (
            ResultFile::LossPlot,
            "Loss",
            "cross-entropy",
            |r| r.train_loss,
            |r| r.test_loss,
        ),
        (
            ResultFile::AccuracyPlot,
            "Accuracy",
            "accuracy",
            |r| r.train_acc,
            |r| r.test_acc,
        ),
    ];
    for (file, title, y_label, train, test) in charts {
        let series = [
            plots::Series {
                name: "train",
                points: line(train),
                color: blue,
            },
            plots::Series {
                name: "test",
                points: line(test),
                color: orange,
            },
        ];
        plots::epoch_chart(&layout.result(file), title, y_label, &series, finetune)?;
    }
    Ok(())
}

/// A grid of misclassified test images (from the cache) with true and predicted labels.
fn error_grid(
    layout: &Layout,
    index: &[IndexRow],
    classes: &ClassList,
    scores: &Scores,
) -> Result<()> {
    let (truth, predicted) = (&scores.truth, &scores.predicted);
    let mapped = rps_core::npy::Mapped::open(&layout.cache_tensor(Split::Test))?;
    let images = mapped
        .view::<u8>()
        .context("errors.png needs the u8 test cache")?;
    let size = images.shape()[2] as u32;
    let tiles: Vec<_> = (0..truth.len())
        .filter(|&i| truth[i] != predicted[i])
        .take(MAX_ERRORS)
        .map(|i| {
            let row = index.get(i).map_or(i, |r| r.row);
            let pixels: Vec<u8> = images.index_axis(Axis(0), row).iter().copied().collect();
            let picture = rps_image::from_chw(&pixels, size);
            (
                picture,
                format!(
                    "{} → {}",
                    classes.name(truth[i]),
                    classes.name(predicted[i])
                ),
            )
        })
        .collect();
    let path = layout.result(ResultFile::ErrorsPlot);
    if tiles.is_empty() {
        let blank = image::RgbImage::from_pixel(size, size, image::Rgb([255, 255, 255]));
        rps_core::plot::image_grid(&path, &[(blank, "no errors".into())], 1, 200)?;
    } else {
        rps_core::plot::image_grid(&path, &tiles, 4, 200)?;
    }
    Ok(())
}
