//! rps-evaluate scores the trained model on the test split into CSV files and plots;
//! [`predict`] classifies anyone's photos with `model.onnx` alone.

pub mod metrics;
pub mod plots;
pub mod predict;
pub mod report;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use ndarray::{Array2, Axis};
use rps_core::progress::{Progress, Units};
use rps_core::rows::{EpochRow, IndexRow, MetricRow, PerClassRow, PhaseOutcome};
use rps_core::sidecar::{EvaluateDetails, EvaluateMeta, EvaluateSettings, Stage, TrainMeta};
use rps_core::text::cell;
use rps_core::upstream::Upstream;
use rps_core::{
    CacheFile, ClassList, Device, Feature, GraphFile, Layout, ResultFile, SessionOptions, Split,
    Tensors, Unfreeze, npy, table,
};
use rps_plot::Tile;
use rps_score::{Features, Scorer, predictions, softmax};

use metrics::Confusion;

#[derive(Debug, Clone)]
pub struct Config {
    pub layout: Layout,
    /// Images per scoring call.
    pub batch: usize,
    pub session: SessionOptions,
}

pub struct Report {
    pub accuracy: f64,
    pub loss: f64,
    pub weights: PathBuf,
    /// The epoch whose weights were scored (`train.json`'s `model_epoch`).
    pub model_epoch: usize,
    /// Said when phase 2 ended worse than phase 1 ([`phase_two_warning`]).
    pub warning: Option<String>,
}

/// What to tell a person whose phase 2 ended with a higher test loss than phase 1's
/// last epoch, and what to try.
pub fn phase_two_warning(outcome: Option<PhaseOutcome>, model_epoch: usize) -> Option<String> {
    let outcome = outcome.filter(PhaseOutcome::worse)?;
    Some(format!(
        "{}; model.onnx holds epoch {model_epoch}. In train mode the trained stages' BatchNorm \
         normalizes with batch statistics the head never saw, and a small FT_LR cannot adapt \
         to them: try FT_BN=eval or a larger FT_LR (README, Tuning)",
        outcome.describe()
    ))
}

/// Up to this many misclassified images go into errors.png.
const MAX_ERRORS: usize = 16;

pub fn run(config: &Config) -> Result<Report> {
    let started = Instant::now();
    let layout = &config.layout;
    let _lock = rps_core::lock::DataLock::acquire(layout, env!("CARGO_PKG_NAME"))?;
    let upstream = Upstream::read(layout)?;
    let (classes, unfreeze) = (upstream.classes, upstream.export.settings.unfreeze);
    check_batch_memory(config.batch, upstream.export.details.eval_floats_per_image)?;
    let weights_path = chosen_weights(layout);
    let weights = npy::read_tensors(&weights_path)?;
    let scores = score_test_split(config, &weights, unfreeze, classes.len())?;
    let confusion = Confusion::new(classes.len(), &scores.truth, &scores.predicted);
    let index = test_index(layout)?;
    let per_class = write_tables(layout, &classes, &confusion, &index, &scores)?;
    let out = |file: ResultFile| layout.result(file);
    let epochs: Vec<EpochRow> = table::read(&out(ResultFile::Epochs))?;
    plot_epochs(layout, &epochs)?;
    let outcome = PhaseOutcome::of(&epochs);
    let model_epoch = TrainMeta::read(&out(ResultFile::TrainMeta))?
        .details
        .model_epoch;
    let warning = phase_two_warning(outcome, model_epoch);
    plots::confusion_chart(&out(ResultFile::ConfusionPlot), &confusion, classes.names())?;
    error_grid(layout, &index, &classes, &scores)?;
    copy_samples(layout)?;
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
            format!(
                "finetune_eval (trained from {unfreeze}, scored from the frozen layers' output)"
            ),
        ),
        ("weights", weights_path.display().to_string()),
        ("model_epoch", model_epoch.to_string()),
        (
            "phase_2",
            outcome.map_or("phase 2 did not run".into(), |o| o.describe()),
        ),
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
    let tables = report::Tables {
        warning: warning.as_deref(),
        summary: &summary,
        per_class: &per_class,
        confusion: &confusion,
        classes: &classes,
    };
    report::write(layout, &tables)?;
    // Written last: make's sign that evaluation finished.
    table::write(&out(ResultFile::Summary), &summary)?;
    let written = [
        ResultFile::Summary,
        ResultFile::PerClass,
        ResultFile::Confusion,
        ResultFile::Predictions,
        ResultFile::LossPlot,
        ResultFile::AccuracyPlot,
        ResultFile::RatePlot,
        ResultFile::ConfusionPlot,
        ResultFile::ErrorsPlot,
        ResultFile::SamplesPlot,
        ResultFile::EvaluateMeta,
        ResultFile::Report,
    ]
    .map(out);
    rps_core::outputs::record(layout, "evaluate", &written)?;
    Ok(Report {
        accuracy: confusion.accuracy(),
        loss,
        weights: weights_path,
        model_epoch,
        warning,
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

impl Scores {
    /// The cross-entropy of test image `i`: `-ln p(true class)`.
    fn loss_of(&self, i: usize) -> f64 {
        -(self.probs[[i, self.truth[i]]] as f64)
            .max(f64::MIN_POSITIVE)
            .ln()
    }

    /// What errors.png says under test image `i`.
    fn caption(&self, i: usize, classes: &ClassList) -> Vec<String> {
        let (truth, predicted) = (self.truth[i], self.predicted[i]);
        vec![
            format!(
                "{}, predicted {}",
                classes.name(truth),
                classes.name(predicted)
            ),
            format!(
                "p {:.2}, loss {:.2}",
                self.probs[[i, predicted]],
                self.loss_of(i)
            ),
        ]
    }

    /// The misclassified test images, highest loss first.
    fn by_descending_loss(&self) -> Vec<usize> {
        let mut wrong: Vec<usize> = (0..self.truth.len())
            .filter(|&i| self.truth[i] != self.predicted[i])
            .collect();
        wrong.sort_by(|&a, &b| self.loss_of(b).total_cmp(&self.loss_of(a)));
        wrong
    }
}

/// Runs `finetune_eval.onnx` with `weights` over the test split's features (the
/// frozen layers' output, or the images when phase 2 trained from `all`).
/// A batch of the eval graph holds at least each image's largest layer input and
/// output at once (export's lower bound): refused before anything is scored when
/// even that is more than is free.
fn check_batch_memory(batch: usize, floats_per_image: u64) -> Result<()> {
    match rps_core::memory::batch_shortfall(batch, floats_per_image) {
        Some((needed, free)) => anyhow::bail!(
            "scoring at --batch {batch} needs at least {} ({} per image for the trained stages' \
             largest layer), and {} is free: lower --batch",
            rps_core::memory::describe(needed),
            rps_core::memory::describe(floats_per_image * 4),
            rps_core::memory::describe(free)
        ),
        None => Ok(()),
    }
}

fn score_test_split(
    config: &Config,
    weights: &Tensors,
    unfreeze: Unfreeze,
    classes: usize,
) -> Result<Scores> {
    let layout = &config.layout;
    let mut scorer = Scorer::open(layout, GraphFile::FinetuneEval, config.session)?;
    let test = Features::load(layout, Split::Test, 1, unfreeze, classes)?;
    let graph = layout.graph(GraphFile::FinetuneEval);
    test.check_fits(Feature::Frozen, &scorer.features_dims()?, &graph)?;
    let rows: Vec<usize> = (0..test.labels.len()).collect();
    let mut probs = Vec::new();
    let mut loss_sum = 0.0f64;
    let progress = Progress::new(
        "evaluate test".into(),
        rows.len() as u64,
        Units::Count("images"),
    );
    for chunk in rows.chunks(config.batch.max(1)) {
        let labels = test.labels_of(chunk);
        let out = scorer.score(&test.rows(Feature::Frozen, chunk)?, &labels, weights)?;
        loss_sum += out.loss as f64 * chunk.len() as f64;
        probs.push(softmax(&out.logits));
        progress.inc(chunk.len() as u64);
    }
    drop(progress);
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
) -> Result<Vec<PerClassRow>> {
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
    Ok(per_class)
}

/// `cache/samples.png` beside the other plots, where a preprocess made one.
fn copy_samples(layout: &Layout) -> Result<()> {
    let samples = layout.cache(CacheFile::Samples);
    if samples.exists() {
        let bytes =
            std::fs::read(&samples).with_context(|| format!("reading {}", samples.display()))?;
        rps_core::atomic::write_bytes(&layout.result(ResultFile::SamplesPlot), &bytes)?;
    }
    Ok(())
}

fn plot_epochs(layout: &Layout, epochs: &[EpochRow]) -> Result<()> {
    let finetune = epochs
        .iter()
        .find(|r| r.phase == rps_core::Phase::Finetune)
        .map(|r| r.epoch as f64 - 0.5);
    type Metric = fn(&EpochRow) -> Option<f64>;
    /// A chart's file, title, y axis, and its lines by name.
    type Chart<'a> = (
        ResultFile,
        &'a str,
        plots::YAxis<'a>,
        Vec<(&'a str, Metric)>,
    );
    let charts: [Chart; 3] = [
        (
            ResultFile::LossPlot,
            "Loss",
            plots::YAxis::Linear("cross-entropy"),
            vec![
                ("train", |r| Some(r.train_loss)),
                ("test", |r| Some(r.test_loss)),
                ("validation", |r| r.val_loss),
            ],
        ),
        (
            ResultFile::AccuracyPlot,
            "Accuracy",
            plots::YAxis::Linear("accuracy"),
            vec![
                ("train", |r| Some(r.train_acc)),
                ("test", |r| Some(r.test_acc)),
                ("validation", |r| r.val_acc),
            ],
        ),
        (
            ResultFile::RatePlot,
            "Learning rate of the head",
            plots::YAxis::Log("learning rate (log scale)"),
            vec![
                ("last step", |r| (r.lr_last > 0.0).then_some(r.lr_last)),
                ("first step", |r| (r.lr_first > 0.0).then_some(r.lr_first)),
            ],
        ),
    ];
    for (file, title, y_axis, metrics) in charts {
        // A phase's rates start afresh (a new optimizer): no line joins the phases.
        // The losses and accuracies run on across them.
        let rates = matches!(y_axis, plots::YAxis::Log(_));
        let series: Vec<plots::Series> = metrics
            .into_iter()
            .zip(plots::SERIES_COLORS)
            .enumerate()
            .map(|(i, ((name, metric), color))| plots::Series {
                name,
                runs: epochs
                    .chunk_by(|a, b| !rates || a.phase == b.phase)
                    .map(|run| {
                        run.iter()
                            .filter_map(|r| Some((r.epoch as f64, metric(r)?)))
                            .collect::<Vec<_>>()
                    })
                    .filter(|run| !run.is_empty())
                    .collect(),
                color,
                // The first step's rate over the last's: with a constant rate they
                // coincide, and dashes let both show.
                dashed: rates && i == 1,
            })
            .filter(|s| !s.runs.is_empty())
            .collect();
        plots::epoch_chart(&layout.result(file), title, y_axis, &series, finetune)?;
    }
    Ok(())
}

/// The misclassified test images (from the cache), most confidently wrong first as
/// fastai's `plot_top_losses` shows them: true and predicted class, the predicted
/// probability and the loss under each.
fn error_grid(
    layout: &Layout,
    index: &[IndexRow],
    classes: &ClassList,
    scores: &Scores,
) -> Result<()> {
    let mapped = rps_core::npy::Mapped::open(&layout.cache_tensor(Split::Test))?;
    let images = mapped
        .view::<u8>()
        .context("errors.png needs the u8 test cache")?;
    let size = images.shape()[2] as u32;
    let wrong = scores.by_descending_loss();
    let tiles: Vec<Tile> = wrong
        .iter()
        .take(MAX_ERRORS)
        .map(|&i| {
            let row = index.get(i).map_or(i, |r| r.row);
            let pixels: Vec<u8> = images.index_axis(Axis(0), row).iter().copied().collect();
            Tile {
                picture: rps_image::from_chw(&pixels, size),
                caption: scores.caption(i, classes),
            }
        })
        .collect();
    let count = scores.truth.len();
    let path = layout.result(ResultFile::ErrorsPlot);
    if tiles.is_empty() {
        let blank = image::RgbImage::from_pixel(size, size, image::Rgb([255, 255, 255]));
        let tile = Tile {
            picture: blank,
            caption: vec!["no errors".into()],
        };
        let title = format!("0 of {count} test images misclassified");
        rps_plot::image_grid(&path, Some(&title), &[tile], 1, 300)?;
    } else {
        let shown = if wrong.len() > tiles.len() {
            format!(", the {} most confidently wrong shown", tiles.len())
        } else {
            ", most confidently wrong first".to_string()
        };
        let title = format!(
            "{} of {count} test images misclassified{shown}",
            wrong.len()
        );
        rps_plot::image_grid(&path, Some(&title), &tiles, 4, 200)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_come_most_confidently_wrong_first() {
        let probs = ndarray::arr2(&[[0.6, 0.4], [0.1, 0.9], [0.3, 0.7], [0.05, 0.95]]);
        let scores = Scores {
            truth: vec![0, 0, 0, 0],
            predicted: predictions(probs.view()),
            probs,
            loss: 0.0,
            device: Device::Cpu,
        };
        assert_eq!(scores.by_descending_loss(), [3, 1, 2]);
        let classes = ClassList::new(vec!["paper".into(), "rock".into()]);
        assert_eq!(
            scores.caption(3, &classes),
            ["paper, predicted rock", "p 0.95, loss 3.00"]
        );
    }
}
