//! The model summary (`graphs/summary.csv`, `rps-export --summary`): one row per
//! layer that holds parameters or pools, by PyTorch name, with its output shape at
//! the configured image size, its parameter count and what trains it. The rows
//! come from the model's one forward under a lowering that only counts, so they
//! are the layers every graph computes.

use rps_core::Unfreeze;
use rps_core::rows::LayerRow;

use crate::network::{Arch, ConvSpec, Lowering, Module};
use crate::window::Window;

/// One image's feature map: channels and edge.
#[derive(Debug, Clone, Copy)]
struct Map {
    channels: usize,
    size: usize,
}

/// A lowering that writes a row for each layer instead of computing it.
struct Summary {
    rows: Vec<LayerRow>,
    /// What phase 2 trains, by tensor name.
    trained: Vec<String>,
}

impl Summary {
    fn push(&mut self, module: &Module, kind: &str, out: Map, params: usize, trains: bool) {
        self.rows.push(LayerRow {
            name: module.name().into(),
            kind: kind.into(),
            output_shape: format!("{}x{}x{}", out.channels, out.size, out.size),
            params,
            trains_head: false,
            trains_finetune: trains,
        });
    }
}

impl Lowering for Summary {
    type Map = Map;

    fn conv_bn(&mut self, spec: &ConvSpec, x: &Map) -> Map {
        let out = Map {
            channels: spec.cout,
            size: spec.out_size(x.size),
        };
        let trains = self.trained.contains(&spec.weight());
        let weights = spec.weight_shape().iter().product();
        self.push(&spec.conv, "Conv2d", out, weights, trains);
        self.push(&spec.bn, "BatchNorm2d", out, 2 * spec.cout, trains);
        out
    }

    fn relu(&mut self, x: &Map) -> Map {
        *x
    }

    fn relu6(&mut self, x: &Map) -> Map {
        *x
    }

    fn add(&mut self, a: &Map, _: &Map) -> Map {
        *a
    }

    fn max_pool(&mut self, x: &Map, window: Window) -> Map {
        let out = Map {
            size: window.out_size(x.size),
            ..*x
        };
        self.push(&Module::root().pp("maxpool"), "MaxPool2d", out, 0, false);
        out
    }

    fn global_average_pool(&mut self, x: &Map) -> Map {
        let out = Map { size: 1, ..*x };
        let avgpool = Module::root().pp("avgpool");
        self.push(&avgpool, "AdaptiveAvgPool2d", out, 0, false);
        out
    }
}

/// The rows of `arch`'s transfer model, phase 2 training from `unfreeze`: the
/// backbone's layers, then the new head (dropout, then Linear: `fc`).
pub fn layers(arch: &Arch, unfreeze: Unfreeze) -> Vec<LayerRow> {
    let trained = arch
        .finetune_params(unfreeze)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut summary = Summary {
        rows: Vec::new(),
        trained,
    };
    let image = Map {
        channels: 3,
        size: arch.image_size,
    };
    arch.pooled(&mut summary, image, 0);
    let head: usize = arch
        .head_shapes(arch.classes)
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    summary.rows.push(LayerRow {
        name: arch.head().name().into(),
        kind: "Dropout, Linear".into(),
        output_shape: arch.classes.to_string(),
        params: head,
        trains_head: true,
        trains_finetune: true,
    });
    summary.rows
}

/// Where `UNFREEZE` can cut `arch`: each choice with the first layer it trains
/// (`last` is the last stage's, named).
pub fn cuts(arch: &Arch) -> Vec<(Unfreeze, String)> {
    let convs = arch.describe().convs;
    arch.unfreeze_choices()
        .into_iter()
        .filter(|&choice| choice != Unfreeze::Last)
        .filter_map(|choice| {
            let stage = arch.first_stage(choice).ok()?;
            let (_, first) = convs.iter().find(|(s, _)| *s == stage)?;
            Some((choice, first.conv.name().to_string()))
        })
        .collect()
}

/// The rows as a table for the terminal, with a line where each of `cuts` starts
/// training, and the totals PyTorch prints.
pub fn table(rows: &[LayerRow], cuts: &[(Unfreeze, String)]) -> String {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(5);
    let mut text = format!(
        "{:<width$}  {:<17}  {:>13}  {:>10}  phase 1  phase 2\n",
        "layer", "kind", "output", "params"
    );
    let mark = |trains: bool| if trains { "trains" } else { "-" };
    for r in rows {
        if let Some((cut, _)) = cuts.iter().find(|(_, first)| *first == r.name) {
            text.push_str(&format!("-- UNFREEZE={cut}: phase 2 trains from here --\n"));
        }
        text.push_str(&format!(
            "{:<width$}  {:<17}  {:>13}  {:>10}  {:<7}  {}\n",
            r.name,
            r.kind,
            r.output_shape,
            r.params,
            mark(r.trains_head),
            mark(r.trains_finetune)
        ));
    }
    let [total, head, finetune] = LayerRow::totals(rows);
    text.push_str(&format!("Total parameters: {total}\n"));
    text.push_str(&format!("Trainable in phase 1: {head}\n"));
    text.push_str(&format!("Trainable in phase 2: {finetune}\n"));
    let choices: Vec<String> = cuts.iter().map(|(cut, _)| cut.to_string()).collect();
    text.push_str(&format!(
        "UNFREEZE: {}, or last (the last stage)\n",
        choices.join(", ")
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Net;

    #[test]
    fn totals_equal_the_parameter_counts_for_every_net_and_depth() {
        for net in Net::ALL {
            let arch = Arch {
                net,
                width: net.full_width(),
                image_size: 224,
                classes: 3,
            };
            for unfreeze in arch.unfreeze_choices() {
                let rows = layers(&arch, unfreeze);
                let counts = arch.param_counts(unfreeze);
                let label = format!("{} from {unfreeze}", net.name());
                let expected = [counts.total, counts.head, counts.finetune];
                assert_eq!(LayerRow::totals(&rows), expected, "{label}");
            }
        }
    }

    #[test]
    fn rows_name_layers_as_pytorch_with_their_output_shapes() {
        let arch = Arch {
            net: Net::ResNet18,
            width: 64,
            image_size: 224,
            classes: 3,
        };
        let rows = layers(&arch, Unfreeze::stage("layer4"));
        let find = |name: &str| rows.iter().find(|r| r.name == name).unwrap();
        let conv1 = find("conv1");
        assert_eq!(
            (conv1.output_shape.as_str(), conv1.params),
            ("64x112x112", 9408)
        );
        assert!(!conv1.trains_finetune);
        assert_eq!(find("maxpool").output_shape, "64x56x56");
        let down = find("layer4.0.downsample.0");
        assert_eq!(
            (down.kind.as_str(), down.output_shape.as_str()),
            ("Conv2d", "512x7x7")
        );
        assert!(down.trains_finetune && !down.trains_head);
        assert_eq!(find("layer4.1.bn2").params, 1024);
        assert_eq!(find("avgpool").output_shape, "512x1x1");
        let head = rows.last().unwrap();
        assert_eq!((head.name.as_str(), head.params), ("fc", 1539));
        // conv1, bn1, maxpool, 8 blocks of 2 convs with BatchNorm, 3 downsamples
        // with theirs, avgpool, fc.
        assert_eq!(rows.len(), 3 + 8 * 4 + 3 * 2 + 2);
        let text = table(&rows, &cuts(&arch));
        assert!(text.contains("Total parameters: 11178051\n"), "{text}");
        assert!(text.contains("Trainable in phase 2: 8395267\n"), "{text}");
        // Each cut stands before the first layer it trains.
        let lines: Vec<&str> = text.lines().collect();
        let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix)).unwrap();
        for (cut, first) in [
            ("all", "conv1 "),
            ("layer1", "layer1.0.conv1 "),
            ("layer4", "layer4.0.conv1 "),
        ] {
            let marker = at(&format!("-- UNFREEZE={cut}: phase 2 trains from here --"));
            assert_eq!(marker + 1, at(first), "{cut}");
        }
        assert!(
            text.ends_with(
                "UNFREEZE: all, layer1, layer2, layer3, layer4, or last (the last stage)\n"
            ),
            "{text}"
        );
    }
}
