"""`jobctl render` of every example spec stays schema-valid on its backend: built-in kinds against Kubernetes'
OpenAPI schema (strict), JobSets against the vendored JobSet CRD (tests/crds/)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from jobs.spec import load_spec
from k8s.jobset import build_objects
from tests.support import crds

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
NEWEST = kubernetes_validate.latest_version()


def validate(obj: dict) -> None:
    if "." in obj["apiVersion"].split("/")[0]:  # a custom resource: its CRD's schema
        crds.validate(obj)
    else:
        kubernetes_validate.validate(obj, NEWEST, strict=True)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_renders_schema_valid_objects(path):
    objects = build_objects(load_spec(path), run_id="20261202-120000", namespace="ml")
    for obj in objects:
        validate(obj)
    backend = load_spec(path).distribution.backend
    assert objects[-1]["kind"] == {"job": "Job", "jobset": "JobSet"}[backend]


def test_there_is_a_multi_node_jobset_example():
    multi = [p for p in EXAMPLES if load_spec(p).distribution.backend == "jobset"]
    assert [p.stem for p in multi] == ["cifar10-cnn-multinode"]
    spec = load_spec(multi[0])
    assert (spec.resources.workers, spec.resources.gpus) == (2, 4)


def test_render_cli_writes_the_jobset_example(tmp_path):
    result = CliRunner().invoke(app, ["render", str(ROOT / "examples" / "cifar10-cnn-multinode.yaml"), "-o",
                                      str(tmp_path), "--run-id", "r1"])
    assert result.exit_code == 0, result.output
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["00-configmap-cifar10-cnn-multinode-spec.yaml", "01-jobset-cifar10-cnn-multinode.yaml"]
    for path in files:
        validate(yaml.safe_load(path.read_text()))
