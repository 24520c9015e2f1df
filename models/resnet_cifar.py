"""Pre-activation ResNets for CIFAR-sized inputs (He et al. 2016, "Identity Mappings in Deep
Residual Networks").

Depth 6n+2 with basic blocks (ResNet8/14/20/56/110: n = 1, 2, 3, 9, 18) and 9n+2 with bottleneck
blocks (ResNet164: n = 18, expansion 4). Three stages of widths 16/32/64 (bottleneck: inner 16/32/64,
output 64/128/256); stages 2 and 3 halve the resolution. The network ends with BN-ReLU, global
average pooling and one linear layer, so any input size >= 8 and any number of input channels works.

Shortcuts are identities except where shape changes (first block of a stage), where a 1x1
convolution projects the pre-activated input, as in the authors' implementation. With these choices
the parameter counts for 10 classes are ResNet8 0.078M, 14 0.175M, 20 0.272M, 56 0.856M,
110 1.731M, 164 1.704M: each rounds to the figure printed (2 decimals) in Table 2 of the SVP paper;
ResNet8 and ResNet14 sit 2.7% under the printed 0.08M / 0.18M, inside that rounding.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    # Convolutions are followed by BN in the next block, so biases would be redundant.
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv3x3(in_ch, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, out_ch)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        # A projection sees the pre-activated input (shared with the residual branch); an identity
        # shortcut carries the raw input, which is the point of the pre-activation design.
        residual = self.shortcut(pre) if self.shortcut is not None else x
        out = self.conv1(pre)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + residual


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1 (x4 channels) plus shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, width, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, kernel_size=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        residual = self.shortcut(pre) if self.shortcut is not None else x
        out = self.conv1(pre)
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + residual


class PreActResNet(nn.Module):
    """CIFAR pre-activation ResNet; `features` is the pooled vector fed to `classifier`."""

    input_kind = "image"

    def __init__(
        self,
        block: type[PreActBasicBlock] | type[PreActBottleneck],
        blocks_per_stage: int,
        *,
        num_classes: int,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError("blocks_per_stage must be >= 1")
        self.conv1 = _conv3x3(in_channels, widths[0])
        stages = []
        in_ch = widths[0]
        for i, width in enumerate(widths):
            layers = []
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(block(in_ch, width, stride))
                in_ch = width * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_ch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_ch
        self.classifier = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation (fan_out) for convolutions, as in the original ResNet papers.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.conv1(x))
        out = torch.relu(self.bn(out))
        return torch.flatten(self.pool(out), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# name -> (block, blocks per stage); depth = 6n+2 (basic) or 9n+2 (bottleneck).
PREACT_CONFIGS: dict[str, tuple[type[PreActBasicBlock] | type[PreActBottleneck], int]] = {
    "preact8": (PreActBasicBlock, 1),
    "preact14": (PreActBasicBlock, 2),
    "preact20": (PreActBasicBlock, 3),
    "preact56": (PreActBasicBlock, 9),
    "preact110": (PreActBasicBlock, 18),
    "preact164": (PreActBottleneck, 18),
}


def preact_resnet(name: str, *, num_classes: int, in_channels: int = 3) -> PreActResNet:
    block, n = PREACT_CONFIGS[name]
    return PreActResNet(block, n, num_classes=num_classes, in_channels=in_channels)
