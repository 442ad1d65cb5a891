use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use rps_core::cli::{DataArgs, OrtArgs};
use rps_core::text::cell;
use rps_core::{GraphFile, ResultFile};
use rps_evaluate::plots;
use rps_evaluate::predict::{ClassNames, Classifier, top_k};

/// Classifies your own photos (any format and size) with the trained model, or with
/// the base ImageNet model (--imagenet, top 5). An unreadable image is reported and
/// the others are still classified; the exit status is then non-zero.
#[derive(Parser)]
#[command(version, allow_negative_numbers = true)]
struct Args {
    /// The photos to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// The classifier graph (default: DATA/results/model.onnx, or with --imagenet
    /// DATA/graphs/imagenet.onnx).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Use the base ImageNet model and print its top 5 classes.
    #[arg(long)]
    imagenet: bool,
    /// Class names, one a line (default: from the model; with --imagenet the 1000
    /// ImageNet names the project carries).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Print CSV (path,rank,class,probability) instead of text.
    #[arg(long)]
    csv: bool,
    /// Save a picture: the photo titled with its prediction (with --imagenet, the top-5
    /// bar chart). With several photos, -1, -2, ... are added to the name.
    #[arg(long, value_name = "PNG")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    ort: OrtArgs,
}

fn main() -> ExitCode {
    rps_core::cli::main(run)
}

fn run(args: Args) -> Result<()> {
    let layout = args.data.layout();
    let model = args.model.clone().unwrap_or_else(|| {
        if args.imagenet {
            layout.graph(GraphFile::Imagenet)
        } else {
            layout.result(ResultFile::Model)
        }
    });
    let names = match (&args.labels, args.imagenet) {
        (Some(path), _) => ClassNames::File(path),
        (None, true) => ClassNames::Imagenet,
        (None, false) => ClassNames::Model,
    };
    let mut classifier = Classifier::open(&model, names, args.ort.options())?;
    eprintln!("predict: {} on {}", model.display(), classifier.device);
    let shown = if args.imagenet {
        5
    } else {
        classifier.classes.len()
    };
    let mut table = args
        .csv
        .then(|| csv::Writer::from_writer(std::io::stdout()));
    if let Some(table) = &mut table {
        table.write_record(["path", "rank", "class", "probability"])?;
    }
    let mut failed = 0;
    for (i, photo) in args.images.iter().enumerate() {
        let prediction = match classifier.classify(photo) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("predict: {}: {e:#}", photo.display());
                failed += 1;
                continue;
            }
        };
        let ranked: Vec<(String, f32)> = top_k(&prediction.probs, shown)
            .into_iter()
            .map(|(c, p)| (classifier.classes[c].clone(), p))
            .collect();
        if let Some(table) = &mut table {
            for (rank, (class, p)) in ranked.iter().enumerate() {
                table.write_record([
                    cell(&photo.display().to_string()).into_owned(),
                    (rank + 1).to_string(),
                    cell(class).into_owned(),
                    p.to_string(),
                ])?;
            }
            table.flush()?;
        } else {
            let rest: Vec<String> = ranked
                .iter()
                .map(|(c, p)| format!("{c} {:.1}%", 100.0 * p))
                .collect();
            println!(
                "{}: {}  ({})",
                photo.display(),
                ranked[0].0,
                rest.join(", ")
            );
        }
        if let Some(plot) = &args.plot {
            let path = numbered(plot, i, args.images.len());
            if args.imagenet {
                plots::bar_chart(
                    &path,
                    &format!("ImageNet top {shown}: {}", file_name(photo)),
                    &prediction.seen,
                    &ranked,
                )?;
            } else {
                plots::titled_image(
                    &path,
                    &prediction.seen,
                    &format!("{} ({:.1}%)", ranked[0].0, 100.0 * ranked[0].1),
                )?;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} images could not be classified",
            args.images.len()
        );
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn numbered(path: &Path, index: usize, count: usize) -> PathBuf {
    if count == 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{stem}-{}.png", index + 1))
}
