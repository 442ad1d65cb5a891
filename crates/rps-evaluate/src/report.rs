//! `results/report.html`: one static page for the run, no script and nothing fetched:
//! the summary, per-class and confusion tables, every plot, and each stage's settings
//! from its sidecar. Links are relative, so `results/` can be zipped and sent.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};
use rps_core::sidecar::{
    EvaluateMeta, ExportMeta, ExtractMeta, FileDigest, LrFindMeta, PreprocessMeta, TrainMeta,
};
use rps_core::{ClassList, GraphFile, Layout, ResultFile, atomic};
use serde::Serialize;

use crate::metrics::Confusion;
use rps_core::rows::{LayerRow, MetricRow, PerClassRow};

/// What the page shows besides the files it reads.
pub struct Tables<'a> {
    /// Shown above everything else.
    pub warning: Option<&'a str>,
    pub summary: &'a [MetricRow],
    pub per_class: &'a [PerClassRow],
    pub confusion: &'a Confusion,
    pub classes: &'a ClassList,
}

/// The plots, in the page's order, with what each shows.
const PLOTS: [(ResultFile, &str); 6] = [
    (
        ResultFile::LossPlot,
        "Loss per epoch; the dashed line is where fine-tuning starts",
    ),
    (ResultFile::AccuracyPlot, "Accuracy per epoch"),
    (
        ResultFile::RatePlot,
        "The head's learning rate at each epoch's first and last step",
    ),
    (
        ResultFile::ConfusionPlot,
        "Confusion matrix of the test split",
    ),
    (
        ResultFile::ErrorsPlot,
        "Misclassified test images, most confidently wrong first",
    ),
    (ResultFile::SamplesPlot, "Training images as augmented"),
];

pub fn write(layout: &Layout, tables: &Tables) -> Result<()> {
    let mut page = String::new();
    page.push_str(HEAD);
    if let Some(warning) = tables.warning {
        let _ = writeln!(page, "<p class=\"warning\">{}</p>", escape(warning));
    }
    section(&mut page, "Summary");
    table(
        &mut page,
        &["metric", "value"],
        tables
            .summary
            .iter()
            .map(|r| vec![r.metric.clone(), readable(&r.value)]),
    );
    section(&mut page, "Per class");
    table(
        &mut page,
        &["class", "precision", "recall", "f1", "support"],
        tables.per_class.iter().map(|r| {
            let scores = [r.precision, r.recall, r.f1].map(|v| format!("{v:.4}"));
            [
                vec![r.class.clone()],
                scores.to_vec(),
                vec![r.support.to_string()],
            ]
            .concat()
        }),
    );
    section(
        &mut page,
        "Confusion matrix (rows: true class, columns: predicted)",
    );
    let names = tables.classes.names();
    let header: Vec<&str> = std::iter::once("true")
        .chain(names.iter().map(String::as_str))
        .collect();
    table(
        &mut page,
        &header,
        tables
            .confusion
            .counts
            .iter()
            .zip(names)
            .map(|(counts, class)| {
                std::iter::once(class.clone())
                    .chain(counts.iter().map(usize::to_string))
                    .collect()
            }),
    );
    training(&mut page, layout)?;
    section(&mut page, "Plots");
    for (file, caption) in PLOTS {
        if layout.result(file).exists() {
            figure(&mut page, file, caption);
        }
    }
    lr_finder(&mut page, layout)?;
    model(&mut page, layout)?;
    section(&mut page, "Settings of each stage");
    stage(&mut page, &layout.graph(GraphFile::Meta), ExportMeta::read)?;
    stage(
        &mut page,
        &layout.cache(rps_core::CacheFile::Meta),
        PreprocessMeta::read,
    )?;
    stage(&mut page, &layout.features_meta(), ExtractMeta::read)?;
    stage(
        &mut page,
        &layout.result(ResultFile::TrainMeta),
        TrainMeta::read,
    )?;
    stage(
        &mut page,
        &layout.result(ResultFile::EvaluateMeta),
        EvaluateMeta::read,
    )?;
    page.push_str("</body>\n</html>\n");
    atomic::write_bytes(&layout.result(ResultFile::Report), page.as_bytes())?;
    Ok(())
}

/// What training did beyond its settings: the epoch the model holds, the class
/// weights, and where `PATIENCE` ended a phase.
fn training(page: &mut String, layout: &Layout) -> Result<()> {
    let meta = TrainMeta::read(&layout.result(ResultFile::TrainMeta))?;
    let d = &meta.details;
    section(page, "Training");
    let weights: Vec<String> = d.class_weights.iter().map(|w| format!("{w:.4}")).collect();
    let mut rows = vec![
        vec!["model.onnx holds epoch".into(), d.model_epoch.to_string()],
        vec!["class weights in the loss".into(), weights.join(", ")],
    ];
    rows.extend(
        d.stopped_early
            .iter()
            .map(|stop| vec!["stopped early".into(), stop.describe()]),
    );
    if d.stopped_early.is_empty() {
        rows.push(vec![
            "stopped early".into(),
            "no: every phase ran all its epochs".into(),
        ]);
    }
    table(page, &["what", "value"], rows.into_iter());
    Ok(())
}

/// `make lr-find`'s sweeps and suggestions, when it ran; its settings are those of
/// that run, which may not be this one's.
fn lr_finder(page: &mut String, layout: &Layout) -> Result<()> {
    let path = layout.result(ResultFile::LrFindMeta);
    if !path.exists() {
        return Ok(());
    }
    let meta = LrFindMeta::read(&path)?;
    section(page, "Learning-rate finder (make lr-find)");
    if let Some(why) = lr_find_is_another_runs(layout, &meta)? {
        let _ = writeln!(
            page,
            "<p class=\"warning\">This sweep is not this run's: {}. `make lr-find` sweeps this one.</p>",
            escape(&why)
        );
    }
    let rate = |r: Option<f64>| r.map_or("none".into(), |r| format!("{r:.2e}"));
    let whole: Vec<bool> = meta
        .details
        .phases
        .iter()
        .map(|p| files_are_as_written(layout, &p.files))
        .collect();
    table(
        page,
        &["phase", "steps", "ended", "steepest fall", "minimum / 10"],
        meta.details.phases.iter().zip(&whole).map(|(p, whole)| {
            let ended = match whole {
                true => p.ended.clone(),
                false => {
                    "its files changed after the sweep (an interrupted make lr-find?): not shown"
                        .into()
                }
            };
            vec![
                p.phase.to_string(),
                p.steps.to_string(),
                ended,
                rate(p.steepest),
                rate(p.minimum_over_10),
            ]
        }),
    );
    // Only the phases this sweep ran, and only as it wrote them: an older or
    // later sweep's plot may stand there.
    for (phase, _) in meta.details.phases.iter().zip(&whole).filter(|(_, w)| **w) {
        let (_, plot) = ResultFile::lr_find(phase.phase);
        let caption = format!(
            "{}: smoothed training loss against the learning rate",
            phase.phase
        );
        figure(page, plot, &caption);
    }
    Ok(())
}

/// Why the sweep `meta` records was made for another run than the one trained
/// (other settings, or other graphs), if it was.
fn lr_find_is_another_runs(layout: &Layout, meta: &LrFindMeta) -> Result<Option<String>> {
    let train = TrainMeta::read(&layout.result(ResultFile::TrainMeta))?;
    let export = ExportMeta::read(&layout.graph(GraphFile::Meta))?;
    let changed = meta.settings.differences(&train.settings);
    if !changed.is_empty() {
        return Ok(Some(format!(
            "made with other settings ({})",
            changed.join(", ")
        )));
    }
    if meta.details.graph.as_deref() != export.sha256(GraphFile::FinetuneStep) {
        return Ok(Some("made with other graphs (export ran since)".into()));
    }
    Ok(None)
}

/// Whether each of `files` under `results/` is there as recorded (and there is one).
fn files_are_as_written(layout: &Layout, files: &[FileDigest]) -> bool {
    !files.is_empty()
        && files.iter().all(|f| {
            std::fs::read(layout.dir(rps_core::Folder::Results).join(&f.name))
                .is_ok_and(|bytes| FileDigest::of(&f.name, &bytes) == *f)
        })
}

/// The model summary export wrote: a layer a row.
fn model(page: &mut String, layout: &Layout) -> Result<()> {
    let path = layout.graph(GraphFile::Summary);
    section(page, "Model (graphs/summary.csv)");
    // Shown only as export wrote it: export.json holds its digest.
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let export = ExportMeta::read(&layout.graph(GraphFile::Meta))?;
    if let Err(problem) = export.check_file(GraphFile::Summary, &path, &bytes) {
        let _ = writeln!(
            page,
            "<p class=\"warning\">Not shown: {}</p>",
            escape(&problem.to_string())
        );
        return Ok(());
    }
    let rows: Vec<LayerRow> = rps_core::table::read(&path)?;
    let mark = |trains: bool| if trains { "trains" } else { "" }.to_string();
    let [total, head, finetune] = LayerRow::totals(&rows);
    let _ = writeln!(
        page,
        "<p>{total} parameters; {head} train in phase 1, {finetune} in phase 2.</p>"
    );
    table(
        page,
        &[
            "layer",
            "kind",
            "output",
            "parameters",
            "phase 1",
            "phase 2",
        ],
        rows.iter().map(|r| {
            vec![
                r.name.clone(),
                r.kind.clone(),
                r.output_shape.clone(),
                r.params.to_string(),
                mark(r.trains_head),
                mark(r.trains_finetune),
            ]
        }),
    );
    Ok(())
}

/// An image of `results/` with its caption.
fn figure(page: &mut String, file: ResultFile, caption: &str) {
    let (name, caption) = (file.file_name(), escape(caption));
    let _ = writeln!(
        page,
        "<figure><img src=\"{name}\" alt=\"{caption}\"/><figcaption>{caption} \
         ({name})</figcaption></figure>"
    );
}

const HEAD: &str = "<!DOCTYPE html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\"/>
<title>rps-transfer: run report</title>
<style>
body { font-family: sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
img { max-width: 100%; border: 1px solid #ddd; }
figure { margin: 1em 0 2em; }
code { font-size: 0.9em; }
.warning { background: #fff3cd; border: 1px solid #e0b000; padding: 0.6em 0.8em; }
</style>
</head>
<body>
<h1>rps-transfer: run report</h1>
";

fn section(page: &mut String, title: &str) {
    let _ = writeln!(page, "<h2>{}</h2>", escape(title));
}

fn table(page: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    page.push_str("<table>\n<tr>");
    for cell in header {
        let _ = write!(page, "<th>{}</th>", escape(cell));
    }
    page.push_str("</tr>\n");
    for row in rows {
        page.push_str("<tr>");
        for cell in row {
            let _ = write!(page, "<td>{}</td>", escape(&cell));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
}

/// One stage's sidecar: its settings, then where it ran and from what.
fn stage<T: Serialize>(
    page: &mut String,
    path: &Path,
    read: impl Fn(&Path) -> rps_core::Result<T>,
) -> Result<()> {
    let meta =
        serde_json::to_value(read(path)?).with_context(|| format!("reading {}", path.display()))?;
    let file = path.file_name().unwrap_or_default().to_string_lossy();
    let _ = writeln!(
        page,
        "<h3>{} <code>({})</code></h3>",
        escape(&text(&meta["stage"])),
        escape(&file)
    );
    let settings = meta["settings"].as_object().into_iter().flatten();
    let facts = ["tool_version", "device", "seconds", "inputs"]
        .into_iter()
        .filter(|key| !meta[*key].is_null())
        .map(|key| (key.to_string(), &meta[key]));
    let rows = settings
        .map(|(key, value)| (key.clone(), value))
        .chain(facts)
        .map(|(key, value)| vec![key, text(value)]);
    table(page, &["setting", "value"], rows);
    Ok(())
}

/// A JSON value as plain text: strings unquoted, lists and objects spelled out.
fn text(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| format!("{k}: {}", text(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// A fraction to four decimals; any other value as it is.
fn readable(value: &str) -> String {
    match value.parse::<f64>() {
        Ok(number) if number.fract() != 0.0 => format!("{number:.4}"),
        _ => value.to_string(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(
            escape("<b>\"rock\" & 'paper'</b>"),
            "&lt;b&gt;&quot;rock&quot; &amp; &#39;paper&#39;&lt;/b&gt;"
        );
        let value = serde_json::json!({"kind": "file", "path": "a.pth"});
        assert_eq!(text(&value), "kind: file, path: a.pth");
    }
}
