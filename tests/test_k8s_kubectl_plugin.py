"""`kubectl jobctl status NAME`: the kubectl-jobctl console script, run by the real kubectl as a plugin against
the KMock API server."""

from __future__ import annotations

import importlib
import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from jobs.spec import parse_spec
from k8s.manifests import build_job_objects
from tests.support.k8s_cluster import FakeCluster, write_kubeconfig

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = shutil.which("kubectl")


def entry_point() -> str:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return scripts["kubectl-jobctl"]


def test_the_console_script_is_declared_and_resolves():
    module, _, function = entry_point().partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def _install_like_pip(bin_dir: Path) -> Path:
    """What pip writes for a console script: a Python file named kubectl-jobctl calling the entry point."""
    module, _, function = entry_point().partition(":")
    script = bin_dir / "kubectl-jobctl"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_runs_jobctl_as_a_plugin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _install_like_pip(bin_dir)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT),
           "HOME": str(tmp_path)}
    listed = subprocess.run([KUBECTL, "plugin", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert str(bin_dir / "kubectl-jobctl") in listed.stdout, listed.stdout + listed.stderr
    with FakeCluster(namespace="ml") as cluster:
        cluster.client().submit(build_job_objects(parse_spec({"name": "cifar"}), run_id="r1"))
        kubeconfig = write_kubeconfig(tmp_path / "kc", cluster.url)
        proc = subprocess.run([KUBECTL, "jobctl", "status", "cifar", "--kubeconfig", str(kubeconfig), "--context",
                               "fake-ml"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "job cifar in ml: Pending  workers 1, active 0" in proc.stdout, proc.stdout  # no pod yet
    help_text = subprocess.run([KUBECTL, "jobctl", "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert "Usage: kubectl jobctl" in help_text.stdout
