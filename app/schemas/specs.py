"""Names the api validates project settings against, as plain strings.

The api must not import ``models`` or ``worker`` (no torch in the api process), so the registry of
architectures and training presets is mirrored here by name. The worker's registry is the source of
truth for what each name builds; a test on the worker side can check that every name here exists.
"""

from __future__ import annotations

MODALITIES: tuple[str, ...] = ("image", "text")

# Architectures per modality (DESIGN.md section 7). preact* are the pre-activation CIFAR ResNets of
# the paper; resnet18/50 are torchvision's (ImageNet-like); mlp/tinycnn are small CPU models.
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "image": ("preact8", "preact14", "preact20", "preact56", "preact110", "preact164", "resnet18", "resnet50", "mlp", "tinycnn"),
    "text": ("fasttext", "vdcnn9", "vdcnn17", "vdcnn29"),
}

# The paper's pairs: ResNet20 -> ResNet164 on CIFAR, fastText -> VDCNN29 on Amazon Review Polarity.
DEFAULT_PROXY_ARCH: dict[str, str] = {"image": "preact20", "text": "fasttext"}
DEFAULT_TARGET_ARCH: dict[str, str] = {"image": "preact164", "text": "vdcnn29"}

# Named learning-rate schedules (worker/training/schedules.py implements them).
SCHEDULE_PRESETS: tuple[str, ...] = ("paper_resnet", "paper_resnet_proxy", "paper_vdcnn", "paper_imagenet", "cpu_small")

AUGMENTATIONS: tuple[str, ...] = ("auto", "none", "flip", "crop_flip")

# Active-learning selection strategies (DESIGN.md section 6); least confidence is the paper's default.
STRATEGIES: tuple[str, ...] = ("least_confidence", "margin", "entropy", "kcenters", "random")
DEFAULT_STRATEGY = "least_confidence"
