import subprocess
import sys

import pytest

import models
from models import ARCHS, build_model, is_fasttext

EXPECTED = {
    "preact8": "image", "preact14": "image", "preact20": "image", "preact56": "image",
    "preact110": "image", "preact164": "image", "resnet18": "image", "resnet50": "image",
    "mlp": "image", "tinycnn": "image",
    "vdcnn9": "text", "vdcnn17": "text", "vdcnn29": "text", "fasttext": "text",
}


def test_registry_names_and_modalities():
    assert {name: info.modality for name, info in ARCHS.items()} == EXPECTED
    for name, info in ARCHS.items():
        assert info.name == name
        assert info.kind == ("fasttext" if name == "fasttext" else "torch")
        assert info.description


def test_is_fasttext():
    assert is_fasttext("fasttext")
    assert not any(is_fasttext(a) for a in ARCHS if a != "fasttext")
    with pytest.raises(ValueError, match="preact20"):
        is_fasttext("nope")


def test_unknown_arch_names_the_known_ones():
    with pytest.raises(ValueError) as err:
        build_model("resnet1000", num_classes=10)
    message = str(err.value)
    assert "resnet1000" in message
    for name in ARCHS:
        assert name in message


def test_fasttext_is_not_a_torch_model():
    with pytest.raises(ValueError, match="FastTextLearner"):
        build_model("fasttext", num_classes=2)


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"num_classes": 3, "in_channels": 0}])
def test_bad_sizes_rejected(kwargs):
    with pytest.raises(ValueError):
        build_model("tinycnn", **kwargs)


def test_registry_import_is_torch_free():
    # The registry is readable (e.g. to validate a project's arch names) without paying for torch.
    code = (
        "import sys, models; models.is_fasttext('preact20'); list(models.ARCHS);"
        "assert 'torch' not in sys.modules and 'fasttext' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_api():
    assert set(models.__all__) >= {"ARCHS", "ArchInfo", "build_model", "is_fasttext"}
