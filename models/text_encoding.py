"""Character encoding for VDCNN (Conneau et al. 2017).

69 tokens: padding (id 0), unknown (id 1), then 67 characters: space, the 26 lower-case letters,
10 digits and 30 punctuation marks. Space has its own id because it is by far the most frequent
character and marks word boundaries; mapping it to "unknown" would blur them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD_ID = 0
UNK_ID = 1
ALPHABET = " abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/|_#$%^&*~+=<>()[]{}@"
VOCAB_SIZE = len(ALPHABET) + 2
DEFAULT_LENGTH = 1014

assert VOCAB_SIZE == 69 and len(set(ALPHABET)) == len(ALPHABET)

# Every alphabet character is ASCII, so a 128-entry table maps code points; anything >= 128 is
# unknown.
_ASCII_TABLE = np.full(128, UNK_ID, dtype=np.int64)
for _i, _c in enumerate(ALPHABET):
    _ASCII_TABLE[ord(_c)] = _i + 2


def encode_chars(texts: Sequence[str], length: int = DEFAULT_LENGTH) -> np.ndarray:
    """Lower-case, truncate or pad to `length`, and map characters to ids: int64 (N, length)."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    n = len(texts)
    out = np.full((n, length), PAD_ID, dtype=np.int64)
    if n == 0:
        return out
    # Lower-case before truncating: lower() can change a string's length (e.g. "İ").
    clipped = [str(t).lower()[:length] for t in texts]
    lengths = np.fromiter((len(t) for t in clipped), dtype=np.int64, count=n)
    total = int(lengths.sum())
    if total == 0:
        return out
    # One UTF-32 buffer for the whole batch gives every code point without a Python-level loop
    # over characters.
    codes = np.frombuffer("".join(clipped).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    ids = np.where(codes < 128, _ASCII_TABLE[np.minimum(codes, 127)], UNK_ID)
    rows = np.repeat(np.arange(n), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(total) - np.repeat(starts, lengths)
    out[rows, cols] = ids
    return out
