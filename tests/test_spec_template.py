"""`jobctl init`'s template says "defaults are shown": every value it shows must be the JobSpec default."""

from __future__ import annotations

import pytest
import yaml

from jobs.spec import JobSpec
from jobs.spec_template import render_template

NAME = "my-job"


def _shown(tree, path=()):
    """(dotted path, value) for every leaf the template shows (commented-out lines are not shown)."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _shown(value, path + (key,))
    else:
        yield ".".join(path), tree


SHOWN = [(path, value) for path, value in _shown(yaml.safe_load(render_template(NAME, "jobctl.yaml"))) if path != "name"]


def _default(path: str):
    node = JobSpec(name=NAME).model_dump(mode="json")
    for key in path.split("."):
        node = node[key]
    return node


def test_the_template_validates_and_shows_every_section():
    spec = JobSpec.model_validate(yaml.safe_load(render_template(NAME, "jobctl.yaml")))
    assert spec.name == NAME
    assert {path.split(".")[0] for path, _ in SHOWN} >= {"data", "model", "training", "callbacks", "export", "resources"}


@pytest.mark.parametrize("path, shown", SHOWN, ids=[p for p, _ in SHOWN])
def test_every_value_the_template_shows_is_the_default(path, shown):
    assert shown == _default(path), f"{path}: the template shows {shown!r}, JobSpec's default is {_default(path)!r}"


def _data_lines() -> str:
    text = render_template(NAME, "jobctl.yaml")
    return text[text.index("\ndata:"):text.index("\nmodel:")]


def test_the_template_lists_every_dataset_a_spec_accepts():
    import typing

    from jobs.spec import DataSpec

    line = next(ln for ln in _data_lines().splitlines() if ln.strip().startswith("dataset:"))
    listed = [c.strip() for c in line.split("#", 1)[1].split("|")]
    assert listed == list(typing.get_args(DataSpec.model_fields["dataset"].annotation))


def test_the_template_names_every_data_field_shown_or_commented():
    import re

    from jobs.spec import DataSpec

    lines = _data_lines()
    missing = [f for f in DataSpec.model_fields if not re.search(rf"^\s*(# )?{f}:", lines, re.M)]
    assert not missing, f"data fields the template never mentions: {missing}"
