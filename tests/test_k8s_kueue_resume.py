"""An eviction by Kueue, end to end: the pods jobctl's Job gets on admission are run for real (`python -m
jobs.train` with the pod's own arguments, the spec from its ConfigMap, a temp dir for the artifacts claim). Kueue
evicts mid-run (the Job is suspended, the pod gets SIGTERM, saves its backup, exits 75), re-admits, and the new
pod's arguments resume the run: every epoch exactly once, and `status` right at every step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import exit_codes
from jobs.spec import parse_spec
from k8s.manifests import SPEC_KEY, SPEC_MOUNT_DIR, build_job_objects
from jobs.contract import ARTIFACTS_MOUNT, run_dir
from tests.support.k8s_cluster import make_pod
from tests.support.kueue_script import KueueScript

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 40  # a digits epoch takes ~0.1 s: the eviction lands mid-run
pytestmark = pytest.mark.slow


def run_pod(pod: dict, spec_file: Path, artifacts: Path, log: Path) -> subprocess.Popen:
    """The pod's container, on this machine: its command and arguments, with the mounts mapped to temp paths."""
    container = pod["spec"]["containers"][0]
    mapped = [a.replace(f"{SPEC_MOUNT_DIR}/{SPEC_KEY}", str(spec_file)).replace(ARTIFACTS_MOUNT, str(artifacts))
              for a in container["args"]]
    assert container["command"] == ["python3", "-m", "jobs.train"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT),
           "JOBCTL_OFFLINE": "1"}
    env.pop("TF_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "jobs.train", *mapped], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def epoch_lines(text: str) -> list[int]:
    return [int(line.split()[1].split("/")[0]) for line in text.splitlines() if line.startswith("epoch ")]


def test_an_evicted_run_resumes_on_readmission_with_no_epoch_lost_or_doubled(cluster, tmp_path):
    spec = parse_spec({
        "name": "evicted", "seed": 7,
        "data": {"dataset": "digits", "max_train_examples": 1000},
        "model": {"type": "cnn", "conv_filters": [8], "padding": "same", "dense_units": [16]},
        "training": {"batch_size": 32, "epochs": EPOCHS, "learning_rate": 0.005},
        "callbacks": {"tensorboard": {"enabled": False}},
        "export": {"warmup_requests": 2},
        "resources": {"queue": "team-a"},
    })
    client = cluster.client()
    client.submit(build_job_objects(spec, run_id="r1"))
    spec_file = tmp_path / "spec.yaml"  # what the pod mounts from the ConfigMap
    configmap = next(o for o in cluster.objects("ConfigMap") if o["metadata"]["name"] == "evicted-spec")
    spec_file.write_text(configmap["data"][SPEC_KEY])
    artifacts = tmp_path / "claim"
    script = KueueScript(cluster, "evicted", flavors={"cpu": "default-flavor", "memory": "default-flavor"})
    script.create_workload(message="waiting for quota")
    assert client.status("evicted").state == "Queued"

    script.admit()
    (first_pod,) = script.start_pods(make_pod)
    assert client.status("evicted").queue.state == "admitted"
    first = run_pod(first_pod, spec_file, artifacts, tmp_path / "first.log")
    marker = run_dir(artifacts, "evicted", "r1") / "backup" / "training_metadata.json"
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert time.monotonic() < deadline and first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.05)

    # Kueue evicts: the Job is suspended, the Job controller deletes the pod, the kubelet sends SIGTERM.
    script.evict()
    first.send_signal(signal.SIGTERM)
    assert first.wait(60) == exit_codes.PREEMPTED, (tmp_path / "first.log").read_text()[-3000:]
    report = client.status("evicted")
    assert report.state == "Queued" and report.queue.state == "preempted"
    saved = json.loads(marker.read_text())["epoch"]
    assert 1 <= saved < EPOCHS, "the eviction came too late to test a resume"

    script.readmit()
    (second_pod,) = script.start_pods(make_pod)
    assert client.status("evicted").state == "Running"
    second = run_pod(second_pod, spec_file, artifacts, tmp_path / "second.log")
    assert second.wait(180) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert epoch_lines((tmp_path / "second.log").read_text()) == list(range(saved + 1, EPOCHS + 1))
    history = json.loads((run_dir(artifacts, "evicted", "r1") / "history.json").read_text())
    assert history["epochs"] == list(range(1, EPOCHS + 1)) and len(history["loss"]) == EPOCHS
    script.finish()
    report = client.status("evicted")
    assert report.state == "Succeeded" and report.queue.state == "finished"
    assert not [m for m, _, _ in cluster.requests() if m == "PATCH"]  # Kueue resumed it each time, never jobctl
