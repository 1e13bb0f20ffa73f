"""The client as a client app installs it: `pip install ./client` in a fresh virtual environment has no TensorFlow,
and predicts against a real `jobctl serve` (started from the project's environment) the same probabilities as the
model called in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.common import free_port
from tests.support.serving import copy_version, in_process, shared_models

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

APP = r"""
import importlib.util, json, sys
import numpy as np
assert importlib.util.find_spec("tensorflow") is None, "tensorflow is importable"
assert importlib.util.find_spec("tensorflow_serving") is None, "tensorflow_serving is importable"
from jobctl_client import PredictClient

target, images = sys.argv[1], np.load(sys.argv[2])
with PredictClient(target, "digits", timeout=30) as client:
    version = client.wait_until_available(timeout=120)
    probs = client.predict(images)["probabilities"]
    top = client.top_k(images[:2], k=2)
    print(json.dumps({"version": version, "health": client.health(), "probabilities": probs.tolist(), "top": top,
                      "status": client.status(), "tf_loaded": "tensorflow" in sys.modules}))
"""


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kwargs)
    assert proc.returncode == 0, f"{cmd[:3]}... exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_pip_install_client_without_tensorflow_predicts_against_jobctl_serve(tmp_path):
    shared = shared_models()
    base = tmp_path / "models" / "digits"
    copy_version(shared["ensemble"], base, 1)
    images = shared["data"][2][:5]
    np.save(tmp_path / "images.npy", images)
    port = free_port()
    log = tmp_path / "serve.log"
    # Started first: it imports TensorFlow while the venv is made.
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", str(base), "--port", str(port),
                               "--host", "127.0.0.1", "--poll-seconds", "3600"], cwd=ROOT,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""),
                              stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        # The wheel is built by the project's environment (setuptools is there), from a copy (setuptools leaves
        # build/ behind, and a stale one would leak into the wheel), then installed the way a client app installs
        # it: into a new venv, its dependencies resolved by pip.
        source = shutil.copytree(ROOT / "client", tmp_path / "client",
                                 ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(source),
              "-w", str(tmp_path / "wheels")])
        wheel = next((tmp_path / "wheels").glob("jobctl_client-*.whl"))
        base_python = getattr(sys, "_base_executable", sys.executable)
        _run([base_python, "-m", "venv", str(tmp_path / "venv")])
        python = tmp_path / "venv" / "bin" / "python"
        _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)])
        # Outside the checkout, with no PYTHONPATH: only what pip installed can be imported.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        out = json.loads(_run([str(python), "-c", APP, f"127.0.0.1:{port}", str(tmp_path / "images.npy")],
                              cwd=tmp_path, env=env).stdout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\njobctl serve log:\n{log.read_text()[-2000:]}") from None
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert out["version"] == 1 and out["health"] == "SERVING" and not out["tf_loaded"]
    assert out["status"] == [{"version": 1, "state": "AVAILABLE", "error_code": 0, "error": ""}]
    expected = in_process(base / "1", images)["probabilities"]
    np.testing.assert_allclose(np.array(out["probabilities"]), expected, atol=1e-6)
    best = np.argsort(-expected[:2], axis=1)[:, :2]
    assert [[c for c, _name, _p in row] for row in out["top"]] == best.tolist()
