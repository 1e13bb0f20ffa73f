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
