//! The tuning settings end to end on small synthetic features: schedules into
//! epochs.csv, per-stage rates, early stopping with resume, class weights, and the
//! learning-rate finder leaving an earlier run's results untouched.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{config, dataset, epochs, without_seconds};
use rps_core::rows::LrFindRow;
use rps_core::sidecar::{LrFindMeta, TrainMeta};
use rps_core::{ClassWeights, Folder, GraphFile, Phase, ResultFile, Schedule, npy, table};
use rps_train::lr_find::{self, Sweeps};
use rps_train::run;

#[test]
fn one_cycle_s_rates_go_into_epochs_csv() {
    let (_dir, layout) = dataset();
    let mut config = config(&layout);
    config.settings.head_schedule = Schedule::OneCycle;
    config.settings.ft_schedule = Schedule::Cosine;
    run(&config).unwrap();
    let rows = epochs(&layout);
    let lr = config.settings.head_lr;
    // 60 images in batches of 16: 4 steps an epoch, 16 in phase 1; the peak at
    // step 4, the first of epoch 2.
    assert!(
        (rows[0].lr_first - lr / 25.0).abs() < 1e-12 * lr,
        "{:?}",
        rows[0]
    );
    assert!((rows[1].lr_first - lr).abs() < 1e-12 * lr, "{:?}", rows[1]);
    assert!(rows[3].lr_last < rows[3].lr_first && rows[3].lr_last < lr / 10.0);
    // Cosine starts phase 2 at FT_LR and falls.
    let ft = config.settings.ft_lr;
    assert_eq!(rows[4].lr_first, ft);
    assert!(rows[5].lr_last < rows[4].lr_last && rows[4].lr_last < ft);
}

#[test]
fn ft_lr_mult_slows_the_stages_and_keeps_the_head_s_rate() {
    let change_in_layer4 = |mult: f64| {
        let (_dir, layout) = dataset();
        let mut config = config(&layout);
        config.settings.head_epochs = 1;
        config.settings.ft_lr_mult = mult;
        run(&config).unwrap();
        let before = npy::read_tensors(&layout.graph(GraphFile::Weights)).unwrap();
        let after = npy::read_tensors(&layout.result(ResultFile::Weights)).unwrap();
        let moved = |name: &str| (&after[name] - &before[name]).mapv(f32::abs).sum() as f64;
        let head = epochs(&layout)[1].lr_first;
        (moved("layer4.1.conv2.weight"), head)
    };
    let (plain, head_plain) = change_in_layer4(1.0);
    let (slowed, head_slowed) = change_in_layer4(100.0);
    // Adam moves each weight by about its rate a step: a hundredth of the rate, a
    // hundredth of the change (give or take the path taken).
    let ratio = plain / slowed;
    assert!(
        (50.0..200.0).contains(&ratio),
        "{plain} / {slowed} = {ratio}"
    );
    assert_eq!(head_plain, head_slowed);
}

#[test]
fn patience_ends_a_phase_early_and_a_resumed_run_ends_it_alike() {
    let settings = |config: &mut rps_train::Config| {
        config.settings.val_fraction = 0.2;
        config.settings.patience = 1;
        config.settings.head_epochs = 12;
        // A rate that overshoots, so that the validation loss stops falling.
        config.settings.head_lr = 0.5;
    };
    let (_a, whole) = dataset();
    let mut config_a = config(&whole);
    settings(&mut config_a);
    run(&config_a).unwrap();
    let rows = epochs(&whole);
    let meta = TrainMeta::read(&whole.result(ResultFile::TrainMeta)).unwrap();
    let stop = meta
        .details
        .stopped_early
        .first()
        .expect("phase 1 stopped early");
    assert_eq!(stop.phase, Phase::Head);
    assert!(
        stop.epoch < 12 && stop.epoch == stop.best_epoch + 1,
        "{stop:?}"
    );
    // Phase 2 follows at once, numbered on.
    let finetune: Vec<usize> = rows
        .iter()
        .filter(|r| r.phase == Phase::Finetune)
        .map(|r| r.epoch)
        .collect();
    assert_eq!(finetune[0], stop.epoch + 1, "{rows:#?}");
    // Interrupted right after the stop, resuming goes on into phase 2 the same way.
    let (_b, parts) = dataset();
    let mut stopped = config(&parts);
    settings(&mut stopped);
    stopped.stop_after = Some(stop.epoch);
    assert!(run(&stopped).is_err());
    let mut resumed = config(&parts);
    settings(&mut resumed);
    resumed.resume = true;
    run(&resumed).unwrap();
    assert_eq!(without_seconds(epochs(&parts)), without_seconds(rows));
}

#[test]
fn patience_without_a_validation_split_and_wrong_class_weights_are_refused() {
    let (_dir, layout) = dataset();
    let mut bad = config(&layout);
    bad.settings.patience = 3;
    let err = run(&bad).unwrap_err().to_string();
    assert!(
        err.contains("--patience 3") && err.contains("--val-fraction"),
        "{err}"
    );
    let mut bad = config(&layout);
    bad.settings.class_weights = ClassWeights::List(vec![1.0, 2.0]);
    let err = run(&bad).unwrap_err().to_string();
    assert!(
        err.contains("--class-weights 1,2: 2 weights for 3 classes"),
        "{err}"
    );
    assert!(!layout.result(ResultFile::Epochs).exists());
}

#[test]
fn balanced_class_weights_are_written_to_train_json() {
    let (_dir, layout) = dataset();
    let mut config = config(&layout);
    config.settings.class_weights = ClassWeights::Balanced;
    config.settings.val_fraction = 0.2;
    run(&config).unwrap();
    let meta = TrainMeta::read(&layout.result(ResultFile::TrainMeta)).unwrap();
    // 16 training images of each class once 4 of 20 are held out: balanced is 1.
    assert_eq!(meta.details.class_weights, [1.0, 1.0, 1.0]);
    assert_eq!(meta.settings.class_weights, ClassWeights::Balanced);
}

/// Every file under `results/` with its bytes.
fn snapshot(dir: PathBuf) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut folders = vec![dir];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn lr_find_sweeps_both_phases_and_leaves_an_earlier_run_untouched() {
    let (_dir, layout) = dataset();
    let config = config(&layout);
    run(&config).unwrap();
    let before = snapshot(layout.dir(Folder::Results));
    let findings = lr_find::run(&config, Sweeps::Both).unwrap();
    let mut after = snapshot(layout.dir(Folder::Results));
    for file in [
        ResultFile::LrFindHead,
        ResultFile::LrFindHeadPlot,
        ResultFile::LrFindFinetune,
        ResultFile::LrFindFinetunePlot,
        ResultFile::LrFindMeta,
    ] {
        assert!(
            after.remove(&layout.result(file)).is_some(),
            "{file} written"
        );
    }
    assert!(before == after, "lr-find changed an earlier run's results");
    let head: Vec<LrFindRow> = table::read(&layout.result(ResultFile::LrFindHead)).unwrap();
    // The separable head takes every rate: 100 steps, rising from 1e-7.
    assert_eq!(head.len(), 100);
    assert_eq!(head[0].lr, lr_find::sweep_rate(0));
    assert!(head[99].smoothed_loss < head[0].smoothed_loss);
    let steepest = findings[0].steepest.expect("a suggestion");
    assert!(head[10..95].iter().any(|r| r.lr == steepest), "{steepest}");
    // Phase 2 diverges before the last rate, and the sweep ends there.
    let finetune: Vec<LrFindRow> = table::read(&layout.result(ResultFile::LrFindFinetune)).unwrap();
    assert_eq!(findings[1].phase, Phase::Finetune);
    assert!(findings[1].ended.starts_with("diverged"), "{findings:?}");
    assert!(finetune.len() < 100 && finetune.len() == findings[1].steps);
    let lowest = finetune
        .iter()
        .map(|r| r.smoothed_loss)
        .fold(f64::MAX, f64::min);
    assert!(finetune.last().unwrap().smoothed_loss > 4.0 * lowest);
    let meta = LrFindMeta::read(&layout.result(ResultFile::LrFindMeta)).unwrap();
    assert_eq!(meta.details.phases, findings);
    // Every string the plots drew has its glyphs in the embedded font.
    let drawn = rps_plot::drawn();
    assert!(
        drawn.iter().any(|t| t.starts_with("Learning-rate finder")),
        "{drawn:?}"
    );
    for text in drawn {
        assert!(rps_plot::missing_glyphs(&text).is_empty(), "{text:?}");
    }
}
