"""Label Studio label configs: the one kind the service serves is parsed, every other kind is a
clear 422 naming what is wrong."""

from __future__ import annotations

import pytest

from app.errors import Unprocessable
from app.services.label_studio.config import check_against_project, parse_label_config
from tests.app.label_studio._ls import CLASSES, label_config


def problems(xml: str) -> str:
    with pytest.raises(Unprocessable) as caught:
        parse_label_config(xml)
    return (caught.value.message + " " + str(caught.value.details)).lower()


def test_the_recorded_config():
    config = parse_label_config(label_config())
    assert (config.from_name, config.to_name, config.object_tag, config.modality) == ("sentiment", "text", "Text", "text")
    assert config.value_key == "text"
    assert config.choices == tuple(CLASSES)
    assert config.result("Neutral") == {
        "from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Neutral"]}
    }
    check_against_project(config, modality="text", classes=["Neutral", "Positive", "Negative"])  # any order


def test_image_config_with_aliases_and_layout_tags():
    config = parse_label_config(
        """<View><Header value="Which animal?"/>
             <Image name="img" value="$image" zoom="true"/>
             <Choices name="animal" toName="img" choice="single-radio" showInline="true">
               <Choice value="A cat" alias="cat"/><Choice value="dog"/>
             </Choices></View>"""
    )
    assert (config.modality, config.value_key, config.choices) == ("image", "image", ("cat", "dog"))
    assert config.result("cat")["value"] == {"choices": ["cat"]}


@pytest.mark.parametrize(
    "xml, words",
    [
        ("<View><Text name='t' value='$text'/><Choices name='c' toName='t' choice='multiple'>"
         "<Choice value='a'/><Choice value='b'/></Choices></View>", ["multiple"]),
        ("<View><Text name='t' value='$text'/><Labels name='l' toName='t'><Label value='PER'/></Labels>"
         "<Choices name='c' toName='t'><Choice value='a'/><Choice value='b'/></Choices></View>", ["labels", "'l'"]),
        ("<View><Image name='i' value='$image'/><RectangleLabels name='box' toName='i'>"
         "<Label value='car'/></RectangleLabels></View>", ["rectanglelabels", "exactly one <choices>"]),
        ("<View><Text name='t' value='$text'/><Choices name='a' toName='t'><Choice value='x'/><Choice value='y'/>"
         "</Choices><Choices name='b' toName='t'><Choice value='x'/><Choice value='y'/></Choices></View>", ["found 2"]),
        ("<View><Audio name='au' value='$audio'/><Choices name='c' toName='au'><Choice value='a'/>"
         "<Choice value='b'/></Choices></View>", ["audio", "only text and image"]),
        ("<View><Text name='t' value='$text'/><Choices name='c' toName='nowhere'><Choice value='a'/>"
         "<Choice value='b'/></Choices></View>", ["nowhere"]),
        ("<View><Text name='t' value='$text'/><Choices name='c' toName='t'><Choice value='a'/></Choices></View>",
         ["at least two"]),
        ("<View><Text name='t' value='$text'/><Choices name='c' toName='t'><Choice value='a'/><Choice value='a'/>"
         "</Choices></View>", ["twice"]),
        ("<View><Text name='t' value='$text'/>", ["well-formed"]),
        ("", ["empty"]),
        ('<!DOCTYPE v [<!ENTITY a "aaaa">]><View><Text name="t" value="&a;"/></View>', ["entities"]),
    ],
)
def test_other_kinds_of_task_are_refused_with_the_reason(xml, words):
    text = problems(xml)
    assert "single-choice classification" in text
    for word in words:
        assert word in text, (word, text)


def test_mismatch_with_the_project_is_named():
    config = parse_label_config(label_config())
    with pytest.raises(Unprocessable) as caught:
        check_against_project(config, modality="image", classes=["Positive", "Negative", "Other"])
    text = str(caught.value.details)
    assert "<Text>" in text and "modality is 'image'" in text
    assert "'Other'" in text and "'Neutral'" in text
