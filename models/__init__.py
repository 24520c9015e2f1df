"""Model registry: architecture names -> constructors.

Every torch model follows one contract: `forward(x)` returns logits (N, num_classes);
`features(x)` returns the penultimate activations (N, d), exactly the input of the last linear
layer `model.classifier`, so `model(x) == model.classifier(model.features(x))`; `model.input_kind`
is "image" (float N x C x H x W) or "chars" (int64 N x L character ids, see
`models.text_encoding.encode_chars`). fastText is not an nn.Module: the worker builds
`models.fasttext_learner.FastTextLearner` for it.

Submodules are imported lazily inside `build_model`, so reading `ARCHS` or calling `is_fasttext`
imports neither torch nor fasttext.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ArchInfo:
    name: str
    modality: Literal["image", "text"]
    kind: Literal["torch", "fasttext"]
    description: str


_ARCH_LIST = [
    ArchInfo("preact8", "image", "torch", "pre-activation ResNet8 (basic blocks), 0.08M params on CIFAR10"),
    ArchInfo("preact14", "image", "torch", "pre-activation ResNet14 (basic blocks), 0.18M params on CIFAR10"),
    ArchInfo("preact20", "image", "torch", "pre-activation ResNet20 (basic blocks), 0.27M params; the paper's CIFAR proxy"),
    ArchInfo("preact56", "image", "torch", "pre-activation ResNet56 (basic blocks), 0.86M params on CIFAR10"),
    ArchInfo("preact110", "image", "torch", "pre-activation ResNet110 (basic blocks), 1.73M params on CIFAR10"),
    ArchInfo("preact164", "image", "torch", "pre-activation ResNet164 (bottleneck), 1.70M params; the paper's CIFAR target"),
    ArchInfo("resnet18", "image", "torch", "torchvision ResNet18, the paper's ImageNet proxy"),
    ArchInfo("resnet50", "image", "torch", "torchvision ResNet50, the paper's ImageNet target"),
    ArchInfo("mlp", "image", "torch", "small MLP (256-128 hidden) for tests and the CPU demo"),
    ArchInfo("tinycnn", "image", "torch", "tiny 3-layer CNN (16/32/64) for tests and the CPU demo"),
    ArchInfo("vdcnn9", "text", "torch", "character-level VDCNN9, 14.17M params for 2 classes; a text proxy"),
    ArchInfo("vdcnn17", "text", "torch", "character-level VDCNN17"),
    ArchInfo("vdcnn29", "text", "torch", "character-level VDCNN29, 16.64M params for 2 classes; the paper's text target"),
    ArchInfo("fasttext", "text", "fasttext", "fastText (bag of words + bigrams, dim 10); the paper's text proxy"),
]
ARCHS: dict[str, ArchInfo] = {a.name: a for a in _ARCH_LIST}


def _check_arch(arch: str) -> ArchInfo:
    try:
        return ARCHS[arch]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}") from None


def is_fasttext(arch: str) -> bool:
    """True when `arch` is trained by FastTextLearner rather than as an nn.Module."""
    return _check_arch(arch).kind == "fasttext"


def build_model(
    arch: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    **kw: Any,
) -> nn.Module:
    """A freshly initialised torch model for `arch`.

    `in_channels` and `image_size` matter for image models only (`image_size` only for the MLP,
    the others pool globally); extra keyword arguments go to the model's constructor.
    Raises ValueError for an unknown arch, for "fasttext" (not an nn.Module) and for bad sizes.
    """
    info = _check_arch(arch)
    if info.kind == "fasttext":
        raise ValueError(f"{arch!r} is not a torch model; build models.fasttext_learner.FastTextLearner instead")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if info.modality == "image" and int(in_channels) < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")

    if arch.startswith("preact"):
        from models.resnet_cifar import PREACT_CONFIGS, PreActResNet

        block, n = PREACT_CONFIGS[arch]
        return PreActResNet(block, n, num_classes=num_classes, in_channels=in_channels, **kw)
    if arch in ("resnet18", "resnet50"):
        from models.torchvision_models import TorchvisionResNet

        return TorchvisionResNet(arch, num_classes=num_classes, in_channels=in_channels, **kw)
    if arch == "mlp":
        from models.small import MLP

        if int(image_size) < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        return MLP(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kw)
    if arch == "tinycnn":
        from models.small import TinyCNN

        return TinyCNN(num_classes=num_classes, in_channels=in_channels, **kw)
    if arch.startswith("vdcnn"):
        from models.vdcnn import VDCNN

        return VDCNN(int(arch.removeprefix("vdcnn")), num_classes=num_classes, **kw)
    raise AssertionError(f"registry entry {arch!r} has no constructor")  # pragma: no cover


__all__ = ["ARCHS", "ArchInfo", "build_model", "is_fasttext"]
