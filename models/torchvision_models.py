"""torchvision ResNet18/50 (randomly initialised) behind the model contract.

The wrapped network's `fc` becomes `classifier` and is replaced inside the backbone by an identity,
so `features` is torchvision's pooled, flattened vector (512 for ResNet18, 2048 for ResNet50).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

_BUILDERS = {
    "resnet18": torchvision.models.resnet18,
    "resnet50": torchvision.models.resnet50,
}


class TorchvisionResNet(nn.Module):
    input_kind = "image"

    def __init__(self, name: str, *, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        # weights=None: nothing is ever downloaded; training starts from scratch as in the paper.
        net = _BUILDERS[name](weights=None, num_classes=num_classes)
        if in_channels != 3:
            old = net.conv1
            net.conv1 = nn.Conv2d(
                in_channels,
                old.out_channels,
                kernel_size=old.kernel_size,
                stride=old.stride,
                padding=old.padding,
                bias=False,
            )
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.classifier: nn.Linear = net.fc
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.backbone = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
