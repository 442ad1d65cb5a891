//! rps-train on small synthetic features, and its step against PyTorch's.

mod common;

use common::{ARCH, config, dataset, epochs, without_seconds};

use ndarray::Array1;
use rps_core::rows::ParamsRow;
use rps_core::sidecar::{TrainMeta, TrainSettings};
use rps_core::{
    CheckpointFile, Feature, FtBn, GraphFile, Layout, ResultFile, SessionOptions, Split, Tensors,
    Unfreeze, npy, table,
};
use rps_export::export::{self, Source};
use rps_fixtures::reference;
use rps_model::network::{Arch, Net};
use rps_train::run;

/// Trains the test dataset with its settings edited by `edit`, which must fail; the
/// data folder and the error.
fn failure(edit: impl FnOnce(&mut TrainSettings)) -> (tempfile::TempDir, Layout, String) {
    let (dir, layout) = dataset();
    let mut config = config(&layout);
    edit(&mut config.settings);
    let err = run(&config).unwrap_err().to_string();
    (dir, layout, err)
}

#[test]
fn loss_falls_on_a_separable_set_and_outputs_are_written() {
    let (_dir, layout) = dataset();
    run(&config(&layout)).unwrap();
    let rows = epochs(&layout);
    assert_eq!(
        rows.iter()
            .map(|r| (r.epoch, r.phase.name()))
            .collect::<Vec<_>>(),
        [
            (1, "head"),
            (2, "head"),
            (3, "head"),
            (4, "head"),
            (5, "finetune"),
            (6, "finetune")
        ]
    );
    // The synthetic pooled features are not layer4 of the layer3 ones, so each phase
    // starts afresh; within each the loss falls.
    assert!(rows[3].train_loss < rows[0].train_loss * 0.2, "{rows:#?}");
    assert!(rows[3].test_acc > 0.95, "{rows:#?}");
    assert!(rows[5].train_loss < rows[4].train_loss * 0.8, "{rows:#?}");
    assert!(
        rows.iter()
            .all(|r| (0.0..=1.0).contains(&r.train_acc) && r.val_loss.is_none())
    );
    let params: Vec<ParamsRow> = table::read(&layout.result(ResultFile::Params)).unwrap();
    assert_eq!(
        params[1].trainable,
        ARCH.param_counts(Unfreeze::stage("layer4")).finetune
    );
    assert!(layout.result(ResultFile::Model).exists());
}

#[test]
fn the_same_seed_gives_the_same_epochs() {
    let ((_a, la), (_b, lb)) = (dataset(), dataset());
    run(&config(&la)).unwrap();
    run(&config(&lb)).unwrap();
    assert_eq!(without_seconds(epochs(&la)), without_seconds(epochs(&lb)));
    let mut other = config(&lb);
    other.settings.seed = 1;
    run(&other).unwrap();
    assert_ne!(without_seconds(epochs(&la)), without_seconds(epochs(&lb)));
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let ((_a, la), (_b, lb)) = (dataset(), dataset());
    run(&config(&la)).unwrap();
    for stop in [2, 5] {
        let mut stopped = config(&lb);
        stopped.stop_after = Some(stop);
        stopped.resume = stop != 2;
        assert!(run(&stopped).is_err());
        assert_eq!(epochs(&lb).len(), stop);
    }
    let mut resumed = config(&lb);
    resumed.resume = true;
    run(&resumed).unwrap();
    assert_eq!(without_seconds(epochs(&la)), without_seconds(epochs(&lb)));
}

/// `FT_BN=eval` runs phase 2 on its own step graph: the trained stages' running
/// statistics end where they started while their scale and shift learn; train mode
/// moves the statistics.
#[test]
fn batch_norm_in_eval_mode_keeps_the_running_statistics() {
    let start = |layout: &Layout| npy::read_tensors(&layout.graph(GraphFile::Weights)).unwrap();
    let trained = |layout: &Layout| npy::read_tensors(&layout.result(ResultFile::Weights)).unwrap();
    for ft_bn in FtBn::ALL {
        let (_dir, layout) = dataset();
        let mut config = config(&layout);
        config.settings.ft_bn = ft_bn;
        run(&config).unwrap();
        let (before, after) = (start(&layout), trained(&layout));
        let changed = |key: &str| before[key] != after[key];
        let statistics = ["layer4.0.bn1.running_mean", "layer4.1.bn2.running_var"];
        assert_eq!(
            statistics.map(changed),
            [ft_bn == FtBn::Train; 2],
            "{ft_bn}"
        );
        assert!(
            changed("layer4.1.bn2.weight") && changed("layer4.0.bn1.bias"),
            "{ft_bn}"
        );
        assert!(!changed("layer3.1.bn2.running_var"), "{ft_bn}");
        let meta = TrainMeta::read(&layout.result(ResultFile::TrainMeta)).unwrap();
        assert_eq!(meta.settings.ft_bn, ft_bn);
    }
}

#[test]
fn validation_picks_a_best_epoch() {
    let (_dir, layout) = dataset();
    let mut config = config(&layout);
    config.settings.val_fraction = 0.2;
    run(&config).unwrap();
    let rows = epochs(&layout);
    assert!(rows.iter().all(|r| r.val_loss.is_some()));
    assert!(layout.result(ResultFile::Best).exists());
    let meta = TrainMeta::read(&layout.result(ResultFile::TrainMeta)).unwrap();
    assert_eq!(meta.details.val_images, 12);
    let best = rows
        .iter()
        .min_by(|a, b| a.val_loss.unwrap().total_cmp(&b.val_loss.unwrap()))
        .unwrap();
    assert_eq!(meta.details.model_epoch, best.epoch);
}

#[test]
fn a_diverging_loss_stops_training_naming_epoch_and_step() {
    let (_dir, layout, err) = failure(|s| {
        s.head_epochs = 1;
        s.ft_lr = 1e30;
    });
    assert!(err.contains("epoch 2, step"), "{err}");
    // The checkpoint of epoch 1 is kept.
    assert!(layout.checkpoint(CheckpointFile::Progress).exists());
    assert!(!layout.result(ResultFile::Model).exists());
}

/// At 32 pixels layer4's maps are 1x1: a last batch of one image would give
/// train-mode BatchNorm one value per channel (variance 0/0). Phase 2 leaves such a
/// batch out, and the run's weights stay finite.
#[test]
fn a_last_batch_of_one_image_never_reaches_train_mode_batch_norm() {
    let (_dir, layout) = dataset();
    let mut config = config(&layout);
    config.settings.batch = 59; // 60 training images: batches of 59 and 1
    run(&config).unwrap();
    let weights = npy::read_tensors(&layout.result(ResultFile::Weights)).unwrap();
    for (name, value) in &weights {
        assert!(value.iter().all(|v| v.is_finite()), "{name}");
    }
    assert!(epochs(&layout).iter().all(|r| r.train_loss.is_finite()));
}

/// A running statistic that is not finite stops training at the step that made
/// it, naming the tensor, epoch and step, and no model is written.
#[test]
fn a_statistic_that_is_not_finite_stops_training_naming_it() {
    let (_dir, layout) = dataset();
    let path = layout.graph(GraphFile::Weights);
    let mut weights = npy::read_tensors(&path).unwrap();
    weights.get_mut("layer4.0.bn1.running_var").unwrap()[[0]] = f32::NAN;
    npy::write_tensors(&path, &weights).unwrap();
    let err = format!("{:#}", run(&config(&layout)).unwrap_err());
    assert!(
        err.contains(
            "buffer:layer4.0.bn1.running_var not finite after the step at epoch 5, step 1"
        ),
        "{err}"
    );
    assert!(!layout.result(ResultFile::Model).exists());
}

/// A run stopped after epoch 5 (phase 2's first), its checkpoint spoiled by
/// `spoil`, then resumed: the refusal.
fn resumed_after(spoil: impl FnOnce(&Layout)) -> String {
    let (_dir, layout) = dataset();
    let mut stopped = config(&layout);
    stopped.stop_after = Some(5);
    assert!(run(&stopped).is_err());
    spoil(&layout);
    let mut resumed = config(&layout);
    resumed.resume = true;
    format!("{:#}", run(&resumed).unwrap_err())
}

/// Edits the checkpoint's progress.json.
fn edit_progress(layout: &Layout, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = layout.checkpoint(CheckpointFile::Progress);
    let mut progress: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut progress);
    std::fs::write(&path, progress.to_string()).unwrap();
}

/// Rewrites the checkpoint's `file` (an .npz) after `edit`.
fn edit_npz(layout: &Layout, file: CheckpointFile, edit: impl FnOnce(&mut Tensors)) {
    let path = layout.checkpoint(file);
    let mut tensors = npy::read_tensors(&path).unwrap();
    edit(&mut tensors);
    npy::write_tensors(&path, &tensors).unwrap();
}

/// A change to a checkpoint.
type Spoil = Box<dyn FnOnce(&Layout)>;

/// A checkpoint that does not fit itself, the settings or the graphs is refused
/// before anything trains, naming results/checkpoint/ and what is wrong.
#[test]
fn an_inconsistent_checkpoint_is_refused_naming_what_is_wrong() {
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "epoch 0 of phase finetune, which runs epochs 5 to 6",
            Box::new(|l| edit_progress(l, |p| p["epoch"] = 0.into())),
        ),
        (
            // Epoch 4's head state (4 epochs of 4 steps) under an epoch-2 progress.
            "counts 16 Adam steps, where epochs 1 to 2 take 8",
            Box::new(|l| {
                edit_progress(l, |p| {
                    p["epoch"] = 2.into();
                    p["phase"] = "head".into();
                });
                edit_npz(l, CheckpointFile::State, |t| {
                    t.retain(|k, _| !k.contains("layer4"));
                    t.insert("step".into(), ndarray::arr0(16.0f32).into_dyn());
                });
            }),
        ),
        (
            "made with other graphs",
            Box::new(|l| edit_progress(l, |p| p["graph"] = "0".repeat(64).into())),
        ),
        (
            "has no adam_v:layer4.1.conv2.weight",
            Box::new(|l| {
                edit_npz(l, CheckpointFile::State, |t| {
                    t.remove("adam_v:layer4.1.conv2.weight");
                })
            }),
        ),
        (
            "layer1.0.conv1.weight holds a value that is not finite",
            Box::new(|l| {
                edit_npz(l, CheckpointFile::Weights, |t| {
                    t.get_mut("layer1.0.conv1.weight").unwrap()[[0, 0, 0, 0]] = f32::NAN;
                })
            }),
        ),
        (
            "has no layer2.1.bn2.running_var",
            Box::new(|l| {
                edit_npz(l, CheckpointFile::Weights, |t| {
                    t.remove("layer2.1.bn2.running_var");
                })
            }),
        ),
        (
            "counts 0 Adam steps",
            Box::new(|l| {
                edit_npz(l, CheckpointFile::State, |t| {
                    t.insert("step".into(), ndarray::arr0(f32::NAN).into_dyn());
                })
            }),
        ),
    ];
    for (want, spoil) in cases {
        let err = resumed_after(spoil);
        assert!(
            err.contains("cannot resume") && err.contains("checkpoint/") && err.contains(want),
            "{want}: {err}"
        );
    }
}

/// FT_LR_MULT below 1 multiplies the rate once per stage below the head: a stage
/// rate outside the range any rate may take is refused before training, naming
/// both flags and the stage.
#[test]
fn a_stage_rate_out_of_range_is_refused_naming_both_flags() {
    let (_dir, _layout, err) = failure(|s| {
        s.ft_lr = 1.0;
        s.ft_lr_mult = 0.01;
    });
    assert!(
        err.contains("--ft-lr 1 with --ft-lr-mult 0.01")
            && err.contains("lr:layer4 a rate of 1.000e2"),
        "{err}"
    );
}

/// A step that cannot fit in the memory this machine has free is refused before
/// anything is allocated, with export's lower bound and what is free.
#[test]
fn a_step_larger_than_free_memory_is_refused_before_it_runs() {
    use rps_core::sidecar::ExportMeta;
    let (_dir, layout) = dataset();
    let path = layout.graph(GraphFile::Meta);
    let mut meta = ExportMeta::read(&path).unwrap();
    meta.details.finetune_floats_per_image = 1 << 40;
    meta.write(&path).unwrap();
    let err = format!("{:#}", run(&config(&layout)).unwrap_err());
    assert!(
        err.contains("phase 2's step at --batch 16 (BATCH) needs at least")
            && err.contains("is free")
            && err.contains("UNFREEZE"),
        "{err}"
    );
    assert!(!layout.result(ResultFile::Epochs).exists(), "it trained");
}

#[test]
fn features_and_labels_of_different_lengths_are_refused() {
    let (_dir, layout) = dataset();
    npy::write(
        &layout.features(Split::Test, Feature::Labels),
        &Array1::<i64>::zeros(7),
    )
    .unwrap();
    let err = run(&config(&layout)).unwrap_err().to_string();
    assert!(
        err.contains("disagree in length") && err.contains("test_labels.npy"),
        "{err}"
    );
    assert!(!layout.result(ResultFile::Epochs).exists());
}

#[test]
fn a_label_outside_the_classes_is_refused_naming_file_row_and_value() {
    for (split, row, label) in [(Split::Train, 5, -1), (Split::Test, 11, 3)] {
        let (_dir, layout) = dataset();
        let path = layout.features(split, Feature::Labels);
        let mut labels = npy::read::<i64>(&path).unwrap();
        labels[[row]] = label;
        npy::write(&path, &labels).unwrap();
        let err = run(&config(&layout)).unwrap_err().to_string();
        let file = path.file_name().unwrap().to_str().unwrap();
        assert!(
            err.contains(file) && err.contains(&format!("row {row} has label {label}")),
            "{err}"
        );
        assert!(!layout.result(ResultFile::Epochs).exists());
    }
}

#[test]
fn a_graph_replaced_by_another_is_refused_naming_make_export() {
    let (_dir, layout) = dataset();
    std::fs::copy(
        layout.graph(GraphFile::HeadEval),
        layout.graph(GraphFile::HeadStep),
    )
    .unwrap();
    let err = run(&config(&layout)).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("head_step.onnx")
            && text.contains("export.json")
            && text.contains("make export"),
        "{text}"
    );
    assert!(!text.contains("dropout_mask"), "{text}");
}

/// A step graph's rate inputs are the groups its metadata lists: one whose list
/// disagrees (as from another build, its digest recorded) is refused naming both.
#[test]
fn a_step_whose_rate_groups_disagree_with_its_inputs_is_refused() {
    use rps_core::sidecar::{ExportMeta, FileDigest};
    let (_dir, layout) = dataset();
    let path = layout.graph(GraphFile::FinetuneStep);
    let mut graph = rps_onnx::ModelFile::read(&path).unwrap();
    assert_eq!(
        graph.metadata(rps_core::names::META_RATE_GROUPS),
        Some("fc:0,layer4:1")
    );
    graph.set_metadata(rps_core::names::META_RATE_GROUPS, "fc:0");
    let bytes = graph.to_bytes();
    std::fs::write(&path, &bytes).unwrap();
    let meta_path = layout.graph(GraphFile::Meta);
    let mut meta = ExportMeta::read(&meta_path).unwrap();
    for file in &mut meta.details.files {
        if file.name == GraphFile::FinetuneStep.file_name() {
            *file = FileDigest::of(&file.name, &bytes);
        }
    }
    meta.write(&meta_path).unwrap();
    let text = format!("{:#}", run(&config(&layout)).unwrap_err());
    assert!(
        text.contains("finetune_step.onnx")
            && text.contains("lr:layer4")
            && text.contains("(fc:0) disagree")
            && text.contains("make export"),
        "{text}"
    );
}

#[test]
fn the_stage_step_matches_pytorch_for_two_steps() {
    use rps_core::names::StateKind;
    use rps_train::runner::{Optimizer, StepRates, StepRunner};
    use rps_train::state::TrainState;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let mini = Arch {
        net: Net::ResNet18,
        width: 8,
        image_size: 64,
        classes: 3,
    };
    let weights = Source::File(reference("mini_w8_s64_seed0.pth"));
    let config = export::Config::for_arch(&layout, weights, &mini, Unfreeze::stage("layer4"));
    export::run(&config).unwrap();
    let options = SessionOptions::cpu(2);
    let mut runner = StepRunner::open(
        &layout,
        GraphFile::FinetuneStep,
        options,
        Optimizer::recipe(3),
    )
    .unwrap();
    let params = runner.state_shapes(StateKind::Param).unwrap();
    let buffers = runner.state_shapes(StateKind::Buffer).unwrap();
    let mut npz = npy::Npz::open(&reference("mini_w8_s64_seed0_train_layer4.npz")).unwrap();
    let mut initial = Tensors::new();
    for (kind, list) in [("param", &params), ("buffer", &buffers)] {
        for (name, _) in list {
            let value = npz.get(&format!("init:{kind}:{name}")).unwrap();
            initial.insert(name.clone(), value);
        }
    }
    let mut state = TrainState::fresh(&initial, &params, &buffers).unwrap();
    let features = rps_score::Batch::F32(npz.get::<f32>("features").unwrap());
    let labels: Vec<i64> = npz.get::<i64>("labels").unwrap().iter().copied().collect();
    let lr = npz.get::<f32>("lr").unwrap().sum();
    let mask = ndarray::Array2::ones((labels.len(), 64));
    for step in 1..=2 {
        let out = runner
            .step(
                &mut state,
                &features,
                &labels,
                &mask,
                StepRates::constant(lr as f64),
            )
            .unwrap();
        let want = npz.get::<f32>(&format!("step{step}:loss")).unwrap().sum();
        assert!(
            (out.loss - want).abs() < 1e-4 * want.abs(),
            "step {step} loss {} vs {want}",
            out.loss
        );
        for (kind, tensors) in [("param", &state.params), ("buffer", &state.buffers)] {
            for (name, value) in tensors {
                let want = npz
                    .get::<f32>(&format!("step{step}:{kind}:{name}"))
                    .unwrap();
                let diff: f32 = value
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f32>()
                    .sqrt();
                let norm: f32 = want.iter().map(|b| b * b).sum::<f32>().sqrt();
                assert!(
                    diff / norm < 1e-3,
                    "step {step} {name}: relative error {}",
                    diff / norm
                );
            }
        }
    }
}

#[test]
fn training_on_nothing_is_refused_before_the_first_epoch() {
    let (_dir, layout, err) = failure(|s| {
        s.val_fraction = 0.99;
    });
    assert!(
        err.contains("class \"a\" has no training image") && err.contains("--val-fraction 0.99"),
        "{err}"
    );
    assert!(!layout.result(ResultFile::Epochs).exists());
    assert!(!layout.result(ResultFile::Model).exists());
}

#[test]
fn resuming_with_other_settings_names_each_difference() {
    let (_dir, layout) = dataset();
    let mut stopped = config(&layout);
    stopped.stop_after = Some(2);
    assert!(run(&stopped).is_err());
    let mut resumed = config(&layout);
    resumed.resume = true;
    resumed.settings.batch = 8;
    resumed.settings.head_lr = 0.5;
    resumed.settings.ft_schedule = rps_core::Schedule::OneCycle;
    resumed.settings.class_weights = rps_core::ClassWeights::Balanced;
    let err = run(&resumed).unwrap_err().to_string();
    assert!(
        err.contains("batch: 16 then, 8 now") && err.contains("head_lr: 0.01 then, 0.5 now"),
        "{err}"
    );
    assert!(
        err.contains(r#"ft_schedule: "constant" then, "one-cycle" now"#)
            && err.contains(r#"class_weights: "none" then, "balanced" now"#),
        "{err}"
    );
    assert_eq!(epochs(&layout).len(), 2, "the resumed rows are kept");
}

#[test]
fn a_first_epoch_that_diverges_leaves_a_header_and_says_nothing_was_saved() {
    let (_dir, layout, err) = failure(|s| {
        s.head_epochs = 0;
        s.ft_lr = 1e30;
    });
    assert!(
        err.contains("epoch 1, step") && err.contains("nothing was saved"),
        "{err}"
    );
    let text = std::fs::read_to_string(layout.result(ResultFile::Epochs)).unwrap();
    assert!(text.starts_with("epoch,phase,train_loss"), "{text:?}");
    assert_eq!(text.lines().count(), 1);
}
