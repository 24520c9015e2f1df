"""Label Studio's label config (its ``schema``): find the one ``Choices`` control and the ``Text`` or
``Image`` it classifies, and check them against the project.

The service does single-label classification of one text or one image, so that is the only kind of
Label Studio task it can serve; anything else (spans, boxes, several controls, multi-choice) is
refused with every problem named, rather than half-supported.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from app.errors import Unprocessable

MAX_CONFIG_CHARS = 1_000_000
OBJECT_MODALITY = {"text": "text", "image": "image"}  # object tag (lower case) -> project modality
SINGLE_CHOICE = {"", "single", "single-radio"}
# Tags that only lay out or decorate the page; every other tag with toName is a control.
LAYOUT_TAGS = {"view", "header", "style", "filter", "collapse", "panel", "choice", "label"}


@dataclass(frozen=True)
class ChoicesConfig:
    """The parts of a label config the service reads and writes."""

    from_name: str  # the Choices control's name: results carry it as from_name
    to_name: str  # the Text / Image tag it classifies
    object_tag: str  # "Text" or "Image"
    modality: str  # "text" or "image"
    value_key: str  # the task data key holding the content ("$text" -> "text")
    choices: tuple[str, ...]  # what results carry for each Choice: its alias, else its value

    def result(self, choice: str) -> dict[str, Any]:
        """One Label Studio result entry selecting ``choice``."""
        return {"from_name": self.from_name, "to_name": self.to_name, "type": "choices", "value": {"choices": [choice]}}


def _invalid(problems: list[str]) -> Unprocessable:
    return Unprocessable(
        "the Label Studio label config is not a single-choice classification of one Text or Image: "
        + problems[0],
        details=[{"field": "label_config", "problem": p} for p in problems],
    )


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_label_config(xml: str) -> ChoicesConfig:
    """Parse a label config; raises Unprocessable naming each problem."""
    if not isinstance(xml, str) or not xml.strip():
        raise _invalid(["the label config is empty"])
    if len(xml) > MAX_CONFIG_CHARS:
        raise _invalid([f"the label config is longer than {MAX_CONFIG_CHARS} characters"])
    if "<!DOCTYPE" in xml.upper() or "<!ENTITY" in xml.upper():
        # Entity declarations are how XML bombs expand; Label Studio configs never need them.
        raise _invalid(["the label config may not declare a DOCTYPE or entities"])
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise _invalid([f"the label config is not well-formed XML: {exc}"]) from None

    elements = list(root.iter())
    by_name = {el.get("name"): el for el in elements if el.get("name") and el.get("value", "").startswith("$")}
    choices_tags = [el for el in elements if _local(el.tag).lower() == "choices"]
    other_controls = [
        el for el in elements
        if el.get("toName") is not None and _local(el.tag).lower() not in LAYOUT_TAGS | {"choices"}
    ]
    problems: list[str] = []
    for el in other_controls:
        problems.append(f"<{_local(el.tag)} name={el.get('name')!r}> is a control the service does not serve")
    if len(choices_tags) != 1:
        problems.append(f"it needs exactly one <Choices> control, found {len(choices_tags)}")
    if problems:
        raise _invalid(problems)

    control = choices_tags[0]
    from_name = control.get("name") or ""
    if not from_name:
        problems.append("<Choices> has no name")
    if (control.get("choice") or "").lower() not in SINGLE_CHOICE:
        problems.append(f"<Choices name={from_name!r}> allows {control.get('choice')!r} choices; only single is supported")
    to_names = [n.strip() for n in (control.get("toName") or "").split(",") if n.strip()]
    target = None
    if len(to_names) != 1:
        problems.append(f"<Choices name={from_name!r}> must name exactly one object in toName, not {to_names}")
    else:
        target = by_name.get(to_names[0])
        if target is None:
            problems.append(f"toName {to_names[0]!r} names no object tag with a $value in the config")
        elif _local(target.tag).lower() not in OBJECT_MODALITY:
            problems.append(f"<Choices> classifies a <{_local(target.tag)}>; only Text and Image are supported")

    names: list[str] = []
    for choice in control.iter():
        if _local(choice.tag).lower() != "choice":
            continue
        name = (choice.get("alias") or choice.get("value") or "").strip()
        if not name:
            problems.append("a <Choice> has no value")
        elif name in names:
            problems.append(f"the choice {name!r} appears twice")
        else:
            names.append(name)
    if len(names) < 2:
        problems.append(f"<Choices name={from_name!r}> needs at least two <Choice> values, found {len(names)}")
    if problems:
        raise _invalid(problems)

    assert target is not None
    tag = _local(target.tag)
    return ChoicesConfig(
        from_name=from_name,
        to_name=to_names[0],
        object_tag=tag,
        modality=OBJECT_MODALITY[tag.lower()],
        value_key=target.get("value", "")[1:],
        choices=tuple(names),
    )


def check_against_project(config: ChoicesConfig, *, modality: str, classes: list[str]) -> None:
    """The config must classify the project's modality into exactly the project's classes (any order)."""
    problems: list[str] = []
    if config.modality != modality:
        problems.append(f"the config classifies a <{config.object_tag}>, but the project's modality is {modality!r}")
    missing = [c for c in classes if c not in config.choices]
    extra = [c for c in config.choices if c not in classes]
    if missing:
        problems.append(f"the project's classes {missing} have no <Choice>")
    if extra:
        problems.append(f"the choices {extra} are not classes of the project (classes: {list(classes)})")
    if problems:
        raise Unprocessable(
            "the Label Studio label config does not match the project: " + problems[0],
            details=[{"field": "label_config", "problem": p} for p in problems],
        )
