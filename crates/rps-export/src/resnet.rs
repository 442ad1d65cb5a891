//! The one ResNet18 definition: torchvision's layout and parameter names, with a
//! configurable base width (64 = torchvision), input size and class count.

/// Named tensor shapes, in order.
pub type Shapes = Vec<(String, Vec<usize>)>;

/// The shape of a ResNet18.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Arch {
    /// Channels of the first stage; stages have w, 2w, 4w, 8w.
    pub width: usize,
    /// Input images are `image_size` x `image_size`.
    pub image_size: usize,
    /// Classes of the new head.
    pub classes: usize,
}

/// One BasicBlock of a stage.
#[derive(Debug, Clone)]
pub struct Block {
    /// `layer4.0`, ...
    pub prefix: String,
    pub cin: usize,
    pub cout: usize,
    pub stride: usize,
}

impl Block {
    pub fn has_downsample(&self) -> bool {
        self.stride != 1 || self.cin != self.cout
    }

    /// `(conv, bn, kernel, stride, cin)` of each convolution in forward order; the
    /// downsample (1x1) comes last.
    pub fn convs(&self) -> Vec<ConvSpec> {
        let p = &self.prefix;
        let mut convs = vec![
            ConvSpec::new(
                format!("{p}.conv1"),
                format!("{p}.bn1"),
                self.cin,
                self.cout,
                3,
                self.stride,
                1,
            ),
            ConvSpec::new(
                format!("{p}.conv2"),
                format!("{p}.bn2"),
                self.cout,
                self.cout,
                3,
                1,
                1,
            ),
        ];
        if self.has_downsample() {
            convs.push(ConvSpec::new(
                format!("{p}.downsample.0"),
                format!("{p}.downsample.1"),
                self.cin,
                self.cout,
                1,
                self.stride,
                0,
            ));
        }
        convs
    }
}

/// A convolution (no bias) followed by its BatchNorm.
#[derive(Debug, Clone)]
pub struct ConvSpec {
    pub conv: String,
    pub bn: String,
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvSpec {
    fn new(
        conv: String,
        bn: String,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Self {
        Self {
            conv,
            bn,
            cin,
            cout,
            kernel,
            stride,
            pad,
        }
    }

    pub fn weight(&self) -> String {
        format!("{}.weight", self.conv)
    }

    pub fn weight_shape(&self) -> Vec<usize> {
        vec![self.cout, self.cin, self.kernel, self.kernel]
    }

    pub fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.pad - self.kernel) / self.stride + 1
    }
}

/// BatchNorm tensors: learned scale and shift, then running statistics.
pub const BN_PARAMS: [&str; 2] = ["weight", "bias"];
pub const BN_BUFFERS: [&str; 2] = ["running_mean", "running_var"];
pub const BN_EPS: f32 = 1e-5;
pub const BN_MOMENTUM: f32 = 0.1;

/// The head: `fc.weight` `[classes, 8w]` and `fc.bias` `[classes]`.
pub const HEAD_WEIGHT: &str = "fc.weight";
pub const HEAD_BIAS: &str = "fc.bias";

impl Arch {
    pub fn stem(&self) -> ConvSpec {
        ConvSpec::new("conv1".into(), "bn1".into(), 3, self.width, 7, 2, 3)
    }

    /// The two blocks of `layer{stage}` (1-based, as torchvision names them).
    pub fn layer(&self, stage: usize) -> Vec<Block> {
        let cout = self.width << (stage - 1);
        let cin = if stage == 1 { self.width } else { cout / 2 };
        let stride = if stage == 1 { 1 } else { 2 };
        vec![
            Block {
                prefix: format!("layer{stage}.0"),
                cin,
                cout,
                stride,
            },
            Block {
                prefix: format!("layer{stage}.1"),
                cin: cout,
                cout,
                stride: 1,
            },
        ]
    }

    /// Channels after layer3 and after layer4 (the pooled features).
    pub fn layer3_channels(&self) -> usize {
        4 * self.width
    }

    pub fn features(&self) -> usize {
        8 * self.width
    }

    /// Spatial size after the stem (conv1 + max pool), then after each stage.
    pub fn sizes(&self) -> [usize; 5] {
        let after_conv1 = self.stem().out_size(self.image_size);
        let after_pool = (after_conv1 + 2 - 3) / 2 + 1;
        let l2 = (after_pool - 1) / 2 + 1;
        let l3 = (l2 - 1) / 2 + 1;
        let l4 = (l3 - 1) / 2 + 1;
        [after_pool, after_pool, l2, l3, l4]
    }

    pub fn layer3_size(&self) -> usize {
        self.sizes()[3]
    }

    /// Every convolution with its BatchNorm, stem first, in forward order.
    pub fn all_convs(&self) -> Vec<ConvSpec> {
        let mut convs = vec![self.stem()];
        for stage in 1..=4 {
            convs.extend(self.layer(stage).iter().flat_map(Block::convs));
        }
        convs
    }

    /// Every tensor of the transfer model's state dict with its shape: the backbone,
    /// BatchNorm statistics included, and the new head.
    pub fn state_shapes(&self) -> Shapes {
        let mut shapes = Vec::new();
        for conv in self.all_convs() {
            shapes.push((conv.weight(), conv.weight_shape()));
            for t in BN_PARAMS.iter().chain(&BN_BUFFERS) {
                shapes.push((format!("{}.{t}", conv.bn), vec![conv.cout]));
            }
        }
        shapes.extend(self.head_shapes(self.classes));
        shapes
    }

    pub fn head_shapes(&self, classes: usize) -> [(String, Vec<usize>); 2] {
        [
            (HEAD_WEIGHT.into(), vec![classes, self.features()]),
            (HEAD_BIAS.into(), vec![classes]),
        ]
    }

    /// What phase 2 trains: layer4's convolution weights and BatchNorm scale and
    /// shift, then the head.
    pub fn finetune_params(&self) -> Shapes {
        let mut params = Vec::new();
        for conv in self.layer(4).iter().flat_map(Block::convs) {
            params.push((conv.weight(), conv.weight_shape()));
            for t in BN_PARAMS {
                params.push((format!("{}.{t}", conv.bn), vec![conv.cout]));
            }
        }
        params.extend(self.head_shapes(self.classes));
        params
    }

    /// layer4's BatchNorm running statistics, which phase 2 updates.
    pub fn finetune_buffers(&self) -> Shapes {
        self.layer(4)
            .iter()
            .flat_map(Block::convs)
            .flat_map(|conv| BN_BUFFERS.map(|t| (format!("{}.{t}", conv.bn), vec![conv.cout])))
            .collect()
    }

    /// Learned parameters (BatchNorm statistics are not parameters), as PyTorch counts.
    pub fn param_counts(&self) -> ParamCounts {
        let count = |shapes: &[(String, Vec<usize>)]| -> usize {
            shapes
                .iter()
                .filter(|(name, _)| !BN_BUFFERS.iter().any(|b| name.ends_with(b)))
                .map(|(_, s)| s.iter().product::<usize>())
                .sum()
        };
        ParamCounts {
            total: count(&self.state_shapes()),
            head: count(&self.head_shapes(self.classes)),
            finetune: count(&self.finetune_params()),
        }
    }
}

/// Parameter counts as the recipe prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ParamCounts {
    pub total: usize,
    /// Trainable in phase 1 (the head).
    pub head: usize,
    /// Trainable in phase 2 (layer4 and the head).
    pub finetune: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_width_counts_match_the_recipe() {
        let arch = Arch {
            width: 64,
            image_size: 224,
            classes: 3,
        };
        assert_eq!(
            arch.param_counts(),
            ParamCounts {
                total: 11_178_051,
                head: 1_539,
                finetune: 8_395_267
            }
        );
        assert_eq!(arch.sizes(), [56, 56, 28, 14, 7]);
    }

    #[test]
    fn mini_sizes_follow_the_strides() {
        let arch = Arch {
            width: 8,
            image_size: 64,
            classes: 3,
        };
        assert_eq!(arch.sizes(), [16, 16, 8, 4, 2]);
        assert_eq!(arch.layer(4)[0].convs()[2].weight_shape(), [64, 32, 1, 1]);
    }
}
