//! `make bench`: measures each stage beside its ceiling and beside PyTorch on this
//! machine, then the whole pipeline beside PyTorch's, and prints one table
//! (markdown) with the projected time of `make all` with the recipe's settings.
//! Timings, never assertions: targets are read off the table.

mod pipeline;
mod python;
mod rates;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use clap::Parser;
use rps_core::cli::whole;
use rps_core::defaults::ranges;
use rps_core::{FtBn, GraphFile, Layout, SessionOptions, Unfreeze};
use rps_export::export::{self, Source};
use rps_export::train::{self as graphs, Convolutions, Gradients};
use rps_model::network::{Arch, Net};
use rps_runtime::Runtime;

use crate::pipeline::{Projection, Recipe, RunTimes};
use crate::python::Python;

/// Benchmarks every stage against its ceiling and PyTorch, and prints one table.
#[derive(Parser)]
#[command(allow_negative_numbers = true)]
struct Args {
    /// Threads for ONNX Runtime, PyTorch and the image work, 1 to 1024 (default: all
    /// cores).
    #[arg(long, value_parser = whole::<usize>(ranges::THREADS))]
    threads: Option<usize>,
    /// Generated 300x300 PNGs for the preprocess benchmark, 1 to 10000.
    #[arg(long, default_value_t = 192, value_parser = whole::<usize>(1..=10_000))]
    images: usize,
    /// Images the extract benchmarks run through the full-width backbone, 1 to 10000.
    /// The stage's first batch carries ONNX Runtime's start-up, which a real run
    /// spreads over hundreds of batches: a few batches would overweight it.
    #[arg(long, default_value_t = 1024, value_parser = whole::<usize>(1..=10_000))]
    extract_images: usize,
    /// Timed train steps (after the warm-up steps), 1 to 1000; their median is
    /// reported.
    #[arg(long, default_value_t = 5, value_parser = whole::<usize>(1..=1000))]
    steps: usize,
    /// Rounds of the phase 2 step beside PyTorch's, 1 to 100: our step and PyTorch's
    /// run alternately, each in a process of its own, so that a slow spell of the
    /// shared machine falls on both; the ratio is the median of the rounds' ratios
    /// (their range beside it), the rates and peaks each side's median and largest.
    #[arg(long, default_value_t = 3, value_parser = whole::<usize>(1..=100))]
    rounds: usize,
    /// Python with Pillow and numpy, for the preprocess comparison.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Python with PyTorch (and onnx, for its exported backbone), for the step,
    /// forward and whole-pipeline comparisons; skipped with a note where it cannot
    /// import them.
    #[arg(long, default_value = "python3")]
    torch_python: String,
    /// Folder with rps.zip and rps-test-set.zip for the whole-pipeline comparison
    /// (skipped with a note without them).
    #[arg(long)]
    archives: Option<PathBuf>,
    /// Weights (.pth) for the whole-pipeline comparison, or `random`.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The network: resnet18, resnet34, resnet50, mobilenet_v2 or efficientnet_lite0
    /// (at its published width).
    #[arg(long, default_value = rps_core::defaults::ARCH, value_parser = net)]
    arch: Net,
    /// The first stage the phase 2 step trains: last (the network's last stage),
    /// all, or a stage by name (`rps-export --summary` lists them; the
    /// whole-pipeline rows keep the recipe's last stage).
    #[arg(long, default_value = rps_core::defaults::UNFREEZE, value_parser = Unfreeze::flag)]
    unfreeze: Unfreeze,
    /// Only times the phase 2 step graph at this path (from `--unfreeze`, as the
    /// table's step row does) and prints its images/s and this process's peak
    /// resident memory. The table runs its step rows this way, each step in a process
    /// of its own, as PyTorch's is.
    #[arg(long, value_name = "GRAPH")]
    step_process: Option<PathBuf>,
}

const IMAGE_SIZE: usize = 224;
const BATCH: usize = 64;
const EXTRACT_BATCH: usize = 32;

struct Row {
    stage: String,
    ours: String,
    ceiling: String,
    ratio: String,
}

impl Row {
    fn new(stage: impl Into<String>, ours: impl Into<String>) -> Self {
        Self {
            stage: stage.into(),
            ours: ours.into(),
            ceiling: String::new(),
            ratio: String::new(),
        }
    }

    fn beside(mut self, ceiling: impl Into<String>, ratio: impl Into<String>) -> Self {
        self.ceiling = ceiling.into();
        self.ratio = ratio.into();
        self
    }
}

/// `--arch`'s value, or the choices.
fn net(name: &str) -> Result<Net, String> {
    Net::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Net::ALL.iter().map(|n| n.name()).collect();
        format!("expected one of {}", names.join(", "))
    })
}

/// The benchmarked model: its published width, full size, the recipe's three
/// classes.
fn arch(net: Net) -> Arch {
    Arch {
        net,
        width: net.full_width(),
        image_size: IMAGE_SIZE,
        classes: 3,
    }
}

/// `ours / theirs` against a target ratio.
fn ratio(ours: f64, theirs: f64, target: f64) -> String {
    format!("ours {:.2}x (target >= {target:.1}x)", ours / theirs)
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let half = sorted.len() / 2;
    match sorted.len() % 2 {
        1 => sorted[half],
        _ => (sorted[half - 1] + sorted[half]) / 2.0,
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if let Some(graph) = &args.step_process {
        return step_process(&args, graph, threads);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let work = tempfile::tempdir()?;
    let pillow = Python {
        interpreter: args.python.clone(),
    };
    let torch = Python {
        interpreter: args.torch_python.clone(),
    };
    let mut rows = Vec::new();

    eprintln!("bench: preprocess ({} PNGs, 300x300)", args.images);
    let pngs = work.path().join("pngs");
    rates::generate_pngs(&pngs, args.images)?;
    let preprocess = rates::preprocess_rates(&pngs)?;
    let theirs = pillow.pillow_rates(&pngs, threads);
    for (name, ours, theirs) in [
        ("test", preprocess.0, theirs.clone().map(|p| p.0)),
        ("train", preprocess.1, theirs.map(|p| p.1)),
    ] {
        let stage = format!("preprocess {name} transform (images/s)");
        rows.push(match theirs {
            Ok(t) => Row::new(stage, format!("{ours:.0}"))
                .beside(format!("{t:.0} (Pillow + numpy)"), ratio(ours, t, 2.0)),
            Err(why) => Row::new(stage, format!("{ours:.0}")).beside(why, ""),
        });
    }

    let arch = arch(args.arch);
    let layout = Layout::new(work.path().join("data"));
    let config = export::Config::for_arch(&layout, Source::Random(0), &arch, args.unfreeze);
    export::run(&config)?;
    rows.extend(extract_rows(&args, &layout, &torch, threads, work.path())?);
    rows.extend(step_rows(&args, &arch, &layout, &torch, threads)?);

    let head_rate = rates::step_rate(
        &arch,
        &layout,
        GraphFile::HeadStep,
        (&[BATCH, arch.features()], Unfreeze::Last),
        SessionOptions::cpu(threads),
        20,
    )?;
    rows.push(Row::new(
        "train phase 1 step, head_step.onnx (images/s)",
        format!("{head_rate:.0}"),
    ));
    rows.extend(pipeline_rows(
        &args,
        &torch,
        threads,
        work.path(),
        preprocess,
    ));
    print_table(&rows, threads);
    Ok(())
}

/// The stage, a bare loop on its graph, ONNX Runtime on PyTorch's exported backbone,
/// and PyTorch's own forward.
fn extract_rows(
    args: &Args,
    layout: &Layout,
    torch: &Python,
    threads: usize,
    work: &Path,
) -> Result<Vec<Row>> {
    let n = args.extract_images;
    eprintln!(
        "bench: extract ({n} images, {}, width {}, 224 px)",
        args.arch.name(),
        args.arch.full_width()
    );
    let stage = rates::extract_rate(layout, n, threads)?;
    let bare = rates::bare_backbone_rate(&layout.graph(GraphFile::Backbone), n, threads)?;
    let mut rows = vec![
        Row::new(
            "extract backbone, the stage (images/s)",
            format!("{stage:.1} ({:.1} ms/image)", 1e3 / stage),
        )
        .beside(
            format!("{bare:.1} (bare ORT loop, batch {EXTRACT_BATCH})"),
            format!("{:.0}% (target >= 90%)", 100.0 * stage / bare),
        ),
    ];
    eprintln!("bench: the backbone in PyTorch ({})", torch.interpreter);
    match torch.forward(args.arch, threads, n, work) {
        Ok(forward) => {
            rows.push(match forward.exported {
                Ok(graph) => {
                    let rate = rates::bare_backbone_rate(&graph, n, threads)?;
                    Row::new(
                        "ONNX Runtime on PyTorch's exported backbone (images/s)",
                        format!("{rate:.1}"),
                    )
                    .beside(
                        format!("torch.onnx, batch {EXTRACT_BATCH}"),
                        ratio(stage, rate, 1.0),
                    )
                }
                Err(why) => Row::new("ONNX Runtime on PyTorch's exported backbone", why),
            });
            rows.push(
                Row::new(
                    format!("PyTorch {} forward, eval (images/s)", forward.version),
                    format!("{:.1}", forward.rate),
                )
                .beside(
                    format!("batch {EXTRACT_BATCH}, inference mode"),
                    ratio(stage, forward.rate, 2.0),
                ),
            );
        }
        Err(why) => rows.push(Row::new("PyTorch forward", format!("not measured: {why}"))),
    }
    Ok(rows)
}

/// The phase 2 step bare and in the stage's loop, beside PyTorch eager, with its
/// time in matrix products and convolutions and with the plain formulations
/// (patches, gathered taps).
fn step_rows(
    args: &Args,
    arch: &Arch,
    layout: &Layout,
    torch: &Python,
    threads: usize,
) -> Result<Vec<Row>> {
    let unfreeze = arch.resolve(args.unfreeze).map_err(anyhow::Error::msg)?;
    eprintln!("bench: train steps (batch {BATCH}, UNFREEZE={unfreeze})");
    // As rps-train opens its sessions.
    let options = SessionOptions::cpu(threads).for_training();
    let ft = layout.graph(GraphFile::FinetuneStep);
    let shape = step_batch_shape(arch, unfreeze);
    let features = (shape.as_slice(), unfreeze);
    let paired = paired_steps(args, &ft, torch, unfreeze, threads)?;
    let bare = median(&paired.ours.iter().map(|step| step.rate).collect::<Vec<_>>());
    let stage = rates::step_rate(
        arch,
        layout,
        GraphFile::FinetuneStep,
        features,
        options,
        args.steps,
    )?;
    let mut rows = vec![Row::new(
        format!("train phase 2 step from {unfreeze}, finetune_step.onnx (images/s)"),
        format!("{bare:.1} ({:.0} ms/step)", 1e3 * BATCH as f64 / bare),
    )];
    let memory = "the step's peak resident memory, each in a process of its own (GB)";
    let gb = |bytes: f64| format!("{:.2}", bytes / 1e9);
    let our_peak = largest_peak(&paired.ours);
    match &paired.theirs {
        Ok((version, theirs)) => {
            let rates: Vec<f64> = theirs.iter().map(|step| step.rate).collect();
            let ratios: Vec<f64> = paired
                .ours
                .iter()
                .zip(theirs)
                .map(|(o, t)| o.rate / t.rate)
                .collect();
            let their_peak = largest_peak(theirs);
            rows.extend([
                Row::new(
                    format!("the same step in PyTorch {version} eager (images/s)"),
                    format!("{:.1}", median(&rates)),
                )
                .beside(
                    format!("scripts/bench_pytorch.py step, {} rounds", ratios.len()),
                    paired_ratio(&ratios, step_target(arch, unfreeze)),
                ),
                round_by_round(&paired.copy_rates, &ratios),
                Row::new(memory, gb(our_peak)).beside(
                    format!("PyTorch's {}", gb(their_peak)),
                    format!("ours {:.2}x (target <= 1x)", our_peak / their_peak),
                ),
            ])
        }
        Err(why) => rows.extend([
            Row::new(
                "the same step in PyTorch eager",
                format!("not measured: {why}"),
            ),
            Row::new(memory, gb(our_peak)),
        ]),
    }
    let (products_ms, run_ms) = rates::product_time(arch, &ft, features, options, args.steps)?;
    rows.push(
        Row::new(
            "the step's time in matrix products and convolutions (MatMul, Gemm, FusedMatMul, Conv)",
            format!(
                "{products_ms:.0} of {run_ms:.0} ms ({:.0}%)",
                100.0 * products_ms / run_ms
            ),
        )
        .beside(
            format!(
                "{:.0} images/s if all else took no time",
                1e3 * BATCH as f64 / products_ms
            ),
            "",
        ),
    );
    let patches = graphs::finetune_step(
        arch,
        unfreeze,
        Convolutions::Patches,
        FtBn::Train,
        Gradients::Internal,
    );
    let patches = Runtime::get()?.session_from_bytes(&patches, "patches", options)?;
    let patches = rates::bare_step_rate(arch, patches.0, features, args.steps)?;
    rows.push(
        Row::new(
            "the same step with patches and gathered taps only (images/s)",
            format!("{patches:.1}"),
        )
        .beside(
            "no Winograd, no blocked convolutions",
            format!("they gain {:.2}x", bare / patches),
        ),
    );
    rows.push(
        Row::new(
            "train phase 2, stage loop (images/s)",
            format!("{stage:.1}"),
        )
        .beside(
            format!("{bare:.1} (bare ORT loop)"),
            format!("{:.0}% (target >= 80%)", 100.0 * stage / bare),
        ),
    );
    Ok(rows)
}

/// The shape of the batch a phase 2 step from `unfreeze` reads.
fn step_batch_shape(arch: &Arch, unfreeze: Unfreeze) -> Vec<usize> {
    [&[BATCH][..], &arch.frozen_shape(unfreeze)].concat()
}

/// `--step-process`: the phase 2 step at `graph`, timed bare, then this process's
/// peak resident memory, as `own_step` reads them.
fn step_process(args: &Args, graph: &Path, threads: usize) -> Result<()> {
    let arch = arch(args.arch);
    let unfreeze = arch.resolve(args.unfreeze).map_err(anyhow::Error::msg)?;
    let shape = step_batch_shape(&arch, unfreeze);
    let session = Runtime::get()?
        .session(graph, SessionOptions::cpu(threads).for_training())?
        .0;
    let rate = rates::bare_step_rate(&arch, session, (&shape, unfreeze), args.steps)?;
    println!("step {rate}");
    println!("peak_resident_bytes {}", rates::peak_resident_bytes()?);
    Ok(())
}

/// Our phase 2 step and PyTorch's, round by round.
struct PairedSteps {
    /// The host's memory copy rate at each round's start (GB/s).
    copy_rates: Vec<f64>,
    ours: Vec<python::Step>,
    /// PyTorch's version and its steps, one a round, or why it could not be measured.
    theirs: python::Measured<(String, Vec<python::Step>)>,
}

/// `--rounds` rounds of our phase 2 step at `graph` and then PyTorch's, each in a
/// process of its own: alternated, a slow spell of the shared machine falls on both.
fn paired_steps(
    args: &Args,
    graph: &Path,
    torch: &Python,
    unfreeze: Unfreeze,
    threads: usize,
) -> Result<PairedSteps> {
    let mut copy_rates = Vec::with_capacity(args.rounds);
    let mut ours = Vec::with_capacity(args.rounds);
    let mut theirs = Vec::with_capacity(args.rounds);
    let mut version = String::new();
    for round in 1..=args.rounds {
        let copy_rate = rates::memory_copy_rate();
        copy_rates.push(copy_rate);
        eprintln!(
            "bench: step round {round} of {} (memory copies at {copy_rate:.1} GB/s): ours, \
             then PyTorch eager ({})",
            args.rounds, torch.interpreter
        );
        ours.push(own_step(args, graph, threads)?);
        match torch.step(args.arch, unfreeze, threads, args.steps) {
            Ok((found, step)) => {
                version = found;
                theirs.push(step);
            }
            Err(why) => {
                return Ok(PairedSteps {
                    copy_rates,
                    ours,
                    theirs: Err(why),
                });
            }
        }
    }
    Ok(PairedSteps {
        copy_rates,
        ours,
        theirs: Ok((version, theirs)),
    })
}

/// Each round's ratio beside the host's memory copy rate at its start: a low rate
/// marks a busy spell, in which our memory-bound passes lose more than PyTorch's.
fn round_by_round(copy_rates: &[f64], ratios: &[f64]) -> Row {
    let listed = |values: &[f64], unit: &str| {
        let each: Vec<String> = values.iter().map(|v| format!("{v:.2}{unit}")).collect();
        each.join(", ")
    };
    Row::new(
        "the host's memory copy rate at each round's start (GB/s)",
        listed(copy_rates, ""),
    )
    .beside("each round's ratio", listed(ratios, "x"))
}

/// The largest peak resident memory of `steps`' processes.
fn largest_peak(steps: &[python::Step]) -> f64 {
    steps.iter().map(|step| step.peak_bytes).fold(0.0, f64::max)
}

/// The median of the rounds' ratios against the target, with their range.
fn paired_ratio(ratios: &[f64], target: f64) -> String {
    let (low, high) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    format!(
        "ours {:.2}x (rounds {low:.2}-{high:.2}x; target >= {target:.1}x)",
        median(ratios)
    )
}

/// Our phase 2 step at `graph`, run by this program's `--step-process` in a process
/// of its own.
fn own_step(args: &Args, graph: &Path, threads: usize) -> Result<python::Step> {
    let out = Command::new(std::env::current_exe()?)
        .arg("--step-process")
        .arg(graph)
        .args([
            "--arch",
            args.arch.name(),
            "--unfreeze",
            args.unfreeze.name(),
        ])
        .args(["--threads", &threads.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "the step's own process failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    python::Step::parse(&String::from_utf8_lossy(&out.stdout))
        .map_err(|why| anyhow::anyhow!("the step's own process: {why}"))
}

/// The phase 2 step's speed target beside PyTorch eager: issue 21's 1.3x from the
/// recipe's depth (the last stage: layer4 for the ResNets), 1.2x from the deeper
/// stages.
fn step_target(arch: &Arch, unfreeze: Unfreeze) -> f64 {
    if arch.resolve(Unfreeze::Last) == Ok(unfreeze) {
        1.3
    } else {
        1.2
    }
}

/// `make all` with the short recipe beside PyTorch's script doing the same, and the
/// default recipe projected from the run.
fn pipeline_rows(
    args: &Args,
    torch: &Python,
    threads: usize,
    work: &Path,
    preprocess: (f64, f64),
) -> Vec<Row> {
    let short = Recipe::SHORT;
    let title = format!(
        "whole pipeline, {} view, {}+{} epochs (s)",
        short.views, short.head_epochs, short.ft_epochs
    );
    let (Some(archives), Some(weights)) = (&args.archives, &args.weights) else {
        return vec![Row::new(title, "not measured: no --archives and --weights")];
    };
    eprintln!("bench: make all, short recipe, on {}", archives.display());
    let data = work.join("pipeline");
    let ours = pipeline::make_all(args.arch, &data, archives, weights, threads, &short)
        .and_then(|wall| RunTimes::read(&Layout::new(&data), wall));
    let ours = match ours {
        Ok(ours) => ours,
        Err(why) => return vec![Row::new(title, format!("not measured: {why:#}"))],
    };
    eprintln!("bench: the same in PyTorch ({})", torch.interpreter);
    let torch_work = work.join("pytorch");
    let theirs = std::fs::create_dir_all(&torch_work)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            torch.pipeline_seconds(args.arch, threads, archives, weights, &torch_work, &short)
        });
    let row = Row::new(title, format!("{:.0}", ours.wall));
    let mut rows = vec![match theirs {
        Ok(t) => row.beside(
            format!("{t:.0} (scripts/bench_pytorch.py pipeline)"),
            ratio(t, ours.wall, 2.0),
        ),
        Err(why) => row.beside(format!("PyTorch not measured: {why}"), ""),
    }];
    let projection = ours.projected(preprocess, &Recipe::DEFAULT);
    rows.push(projection_row(&projection));
    rows
}

fn projection_row(p: &Projection) -> Row {
    Row::new(
        "make all, recipe defaults (projected)",
        format!("{:.1} min", p.total() / 60.0),
    )
    .beside(
        format!(
            "preprocess {:.0} s, extract {:.0} s, train {:.0} s, the rest {:.0} s",
            p.preprocess, p.extract, p.train, p.fixed
        ),
        "from the whole-pipeline run (target <= 10 min)",
    )
}

fn print_table(rows: &[Row], threads: usize) {
    println!("| stage | ours | ceiling / reference | ratio |");
    println!("| --- | --- | --- | --- |");
    for r in rows {
        println!("| {} | {} | {} | {} |", r.stage, r.ours, r.ceiling, r.ratio);
    }
    println!(
        "\n{threads} threads; ONNX Runtime {} on cpu; {}",
        Runtime::get()
            .ok()
            .and_then(|r| r.version())
            .unwrap_or_default(),
        cpu_model().unwrap_or_else(|| "CPU model unknown".into())
    );
}

/// The CPU's model name, as `lscpu` reports it.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_takes_the_middle_or_the_mean_of_the_two_middles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn each_round_lists_its_copy_rate_beside_its_ratio() {
        let row = round_by_round(&[11.5, 6.25], &[1.31, 0.984]);
        assert_eq!(row.ours, "11.50, 6.25");
        assert_eq!(row.ratio, "1.31x, 0.98x");
    }

    #[test]
    fn the_memory_probe_reads_a_rate_a_host_can_have() {
        let rate = rates::memory_copy_rate();
        assert!(rate > 0.1 && rate < 10_000.0, "{rate} GB/s");
    }

    #[test]
    fn paired_rounds_report_their_median_ratio_and_range() {
        assert_eq!(
            paired_ratio(&[1.25, 1.05, 1.1], 1.2),
            "ours 1.10x (rounds 1.05-1.25x; target >= 1.2x)"
        );
    }
}
