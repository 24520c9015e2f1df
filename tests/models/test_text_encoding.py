import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.text_encoding import ALPHABET, DEFAULT_LENGTH, PAD_ID, UNK_ID, VOCAB_SIZE, encode_chars


def naive_encode(texts, length):
    table = {c: i + 2 for i, c in enumerate(ALPHABET)}
    out = np.full((len(texts), length), PAD_ID, dtype=np.int64)
    for r, t in enumerate(texts):
        for c, ch in enumerate(t.lower()[:length]):
            out[r, c] = table.get(ch, UNK_ID)
    return out


def test_vocabulary():
    assert VOCAB_SIZE == 69
    assert len(set(ALPHABET)) == len(ALPHABET) == 67
    assert set("abcdefghijklmnopqrstuvwxyz0123456789 ") <= set(ALPHABET)
    assert not any(c.isupper() for c in ALPHABET)
    assert {PAD_ID, UNK_ID} == {0, 1}
    assert DEFAULT_LENGTH == 1014


def test_shape_dtype_and_default_length():
    x = encode_chars(["Hello", "", "x" * 2000])
    assert x.shape == (3, 1014) and x.dtype == np.int64
    assert (x[1] == PAD_ID).all()
    assert (x[2] != PAD_ID).all()  # truncated, not padded
    assert x.min() >= 0 and x.max() < VOCAB_SIZE


def test_lower_case_padding_and_unknown():
    x = encode_chars(["AbC é!"], length=8)
    a, b, c = (ALPHABET.index(ch) + 2 for ch in "abc")
    space, bang = ALPHABET.index(" ") + 2, ALPHABET.index("!") + 2
    assert x.tolist() == [[a, b, c, space, UNK_ID, bang, PAD_ID, PAD_ID]]
    assert (encode_chars(["ABC"], length=3) == encode_chars(["abc"], length=3)).all()


def test_empty_batch():
    assert encode_chars([], length=5).shape == (0, 5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=6), st.integers(min_value=1, max_value=30))
def test_matches_per_character_reference(texts, length):
    assert (encode_chars(texts, length=length) == naive_encode(texts, length)).all()
