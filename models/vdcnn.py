"""VDCNN (Conneau et al. 2017, "Very Deep Convolutional Networks for Text Classification").

Character ids (N, L) -> lookup table (69 x 16) -> temporal conv (3, 64) -> four stages of
convolutional blocks with 64, 128, 256, 512 feature maps -> k-max pooling (k = 8) -> fully connected
4096 -> 2048 -> 2048 -> classes. Blocks per stage: depth 9: (1, 1, 1, 1), 17: (2, 2, 2, 2),
29: (5, 5, 2, 2); a block is two (conv k=3, BN, ReLU) layers. Between stages the temporal length
is halved by max pooling (kernel 3, stride 2), the paper's best down-sampling option.

Parameter counts (SVP paper, Table 2): VDCNN29 16.64M and VDCNN9 14.17M for 2 classes, 16.64M
and 14.18M for 5 classes. All four are met (16,635,794 / 14,172,050 / 16,641,941 / 14,178,197) by
block convolutions *without* biases (each is followed by BN, which has its own shift), BN with
affine weight and bias, a biased temporal convolution (no BN follows it), no shortcuts and no
dropout. Biased block convolutions would give 16.65M for VDCNN29 with 5 classes, off the paper's
figure; 1x1 projection shortcuts where the width changes would add 0.17M (16.81M).
"""

from __future__ import annotations

import torch
from torch import nn

from models.text_encoding import PAD_ID, VOCAB_SIZE

VDCNN_DEPTHS: dict[int, tuple[int, int, int, int]] = {
    9: (1, 1, 1, 1),
    17: (2, 2, 2, 2),
    29: (5, 5, 2, 2),
}
WIDTHS = (64, 128, 256, 512)


class ConvBlock(nn.Sequential):
    """Two temporal convolutions (k=3), each followed by BN and ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv1d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm1d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv1d(out_ch, out_ch, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm1d(out_ch),
            nn.ReLU(inplace=True),
        )


def kmax_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest activations of each channel along time, kept in temporal order: (N, C, k)."""
    idx = x.topk(k, dim=2).indices.sort(dim=2).values
    return x.gather(2, idx)


class VDCNN(nn.Module):
    """Character-level VDCNN; `features` is the 2048 vector fed to `classifier`."""

    input_kind = "chars"

    def __init__(
        self,
        depth: int = 29,
        *,
        num_classes: int,
        vocab_size: int = VOCAB_SIZE,
        embedding_dim: int = 16,
        k: int = 8,
        hidden: int = 2048,
    ) -> None:
        super().__init__()
        if depth not in VDCNN_DEPTHS:
            raise ValueError(f"VDCNN depth must be one of {sorted(VDCNN_DEPTHS)}, got {depth}")
        self.depth = depth
        self.k = k
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD_ID)
        self.temporal_conv = nn.Conv1d(embedding_dim, WIDTHS[0], kernel_size=3, padding=1)
        layers: list[nn.Module] = []
        in_ch = WIDTHS[0]
        for stage, (width, n_blocks) in enumerate(zip(WIDTHS, VDCNN_DEPTHS[depth], strict=True)):
            if stage > 0:
                layers.append(nn.MaxPool1d(kernel_size=3, stride=2, padding=1))
            for _ in range(n_blocks):
                layers.append(ConvBlock(in_ch, width))
                in_ch = width
        self.conv_blocks = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Linear(in_ch * k, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.feature_dim = hidden
        self.classifier = nn.Linear(hidden, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def min_length(self) -> int:
        """Shortest input that still leaves k positions after the three halvings."""
        return 8 * (self.k - 1) + 1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"VDCNN expects int64 character ids of shape (N, L), got {tuple(x.shape)}")
        if x.shape[1] < self.min_length:
            raise ValueError(f"VDCNN needs inputs of length >= {self.min_length}, got {x.shape[1]}")
        out = self.embedding(x).transpose(1, 2)  # (N, emb, L): Conv1d wants channels first
        out = self.conv_blocks(self.temporal_conv(out))
        out = torch.flatten(kmax_pool(out, self.k), 1)
        return self.fc(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
