"""Distributed training with real processes: MirroredStrategy on logical CPU devices, MultiWorkerMirroredStrategy
across worker processes on 127.0.0.1 with TF_CONFIG exactly as pods get it, chief-only writes, a worker killed and
the job restarted, SIGTERM, and the bounded failures (malformed TF_CONFIG, a peer that never comes up).

Every worker is a `python -m jobs.train` process with a hard timeout; all of them are killed if a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jobs import exit_codes
from bench.common import free_ports
from jobs.spec import apply_overrides

ROOT = Path(__file__).resolve().parents[1]
HARD_TIMEOUT = 180.0  # per process; a hang fails the test instead of the suite

pytestmark = pytest.mark.slow


def tiny_spec(tmp_path: Path, name: str, **overrides) -> Path:
    spec = {
        "name": name,
        "seed": 7,
        "data": {"dataset": "digits", "max_train_examples": 300},
        "model": {"type": "cnn", "conv_filters": [8], "padding": "same", "dense_units": [16]},
        "training": {"batch_size": 32, "epochs": 2, "learning_rate": 0.005},
        "callbacks": {"tensorboard": {"enabled": False}},
        "export": {"warmup_requests": 2},
        "distribution": {"worker_timeout_seconds": 90},
    }
    spec = apply_overrides(spec, overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path




def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}})


def env_for(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "JOBCTL_WORKERS", "JOB_COMPLETION_INDEX")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT), JOBCTL_OFFLINE="1")
    env.update(extra)
    return env


class Workers:
    """`python -m jobs.train` processes; output in files (a full pipe must never block a worker)."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, spec: Path, artifacts: Path, *args: str, label: str, cli: bool = False, **env: str) -> subprocess.Popen:
        log = self.tmp_path / f"{label}.log"
        # The container's entry point, or what a user types (`jobctl train SPEC ...`).
        command = ["-m", "cli.main", "train", str(spec)] if cli else ["-m", "jobs.train", "--spec", str(spec)]
        proc = subprocess.Popen(
            [sys.executable, *command, "--artifacts-dir", str(artifacts), *args],
            cwd=ROOT, env=env_for(**env), stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.procs.append((proc, log))
        return proc

    def cluster(self, n: int, spec: Path, artifacts: Path, *args: str, label: str) -> list[subprocess.Popen]:
        ports = free_ports(n)
        return [self.start(spec, artifacts, *args, label=f"{label}{i}", TF_CONFIG=tf_config(ports, i)) for i in range(n)]

    def wait(self, procs, timeout: float = HARD_TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.kill_all()
                pytest.fail(f"worker {p.pid} still running after {timeout:g} s:\n{self.logs()}")
        return codes

    def sigterm_once_backed_up(self, proc, marker: Path, poll: float = 0.05) -> None:
        """SIGTERM `proc` as soon as `marker` (written with a finished epoch's backup) exists: exit 75 expected."""
        deadline = time.monotonic() + HARD_TIMEOUT
        while not marker.exists():
            assert time.monotonic() < deadline and proc.poll() is None, self.logs()
            time.sleep(poll)
        proc.send_signal(signal.SIGTERM)
        assert self.wait([proc], timeout=60) == [exit_codes.PREEMPTED], self.logs()

    def log(self, proc) -> str:
        return next(log for p, log in self.procs if p is proc).read_text()

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.procs)

    def kill_all(self) -> None:
        for p, _ in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def workers(tmp_path):
    w = Workers(tmp_path)
    yield w
    w.kill_all()


def epoch_lines(text: str) -> list[int]:
    return [int(line.split()[1].split("/")[0]) for line in text.splitlines() if line.startswith("epoch ")]


def report_lines(text: str) -> list:
    """A worker's epoch and best-epoch lines cut before the wall times, which differ between workers."""
    return [ln.rsplit(";", 1)[0] if ln.startswith("best") else ln.split("  ")[:5]
            for ln in text.splitlines() if ln.startswith(("epoch ", "best epoch"))]


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def stray_worker_dirs() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("jobctl-worker*")}


# ------------------------------------------------------------------------------------------- one node
def test_mirrored_on_two_logical_devices_matches_one_device(tmp_path, workers):
    """`jobctl train SPEC --virtual-devices 2` against the one-device run. Same global batch, seed and data order: the only difference left is the all-reduce's summation order.

    shuffle_buffer 1 keeps the order as stored on both sides, so the runs are comparable step by step
    (numerically, not only statistically). Float32 sums in a different order differ by ~1e-7 relative per step; over 2 epochs of Adam that stays
    far below the 1e-3 relative tolerance used here, while any real mistake (a per-replica instead of global
    loss scale, a replica seeing the wrong half of a batch) moves the first epoch's loss by percents.
    """
    spec = tiny_spec(tmp_path, "mirror", **{"training.shuffle_buffer": 1, "export.warmup_requests": 0})
    one = workers.start(spec, tmp_path / "one", "--run-id", "r", label="one")
    two = workers.start(spec, tmp_path / "two", "--run-id", "r", "--virtual-devices", "2", label="two", cli=True)
    assert workers.wait([one, two]) == [0, 0], workers.logs()
    h1 = json.loads((tmp_path / "one/runs/mirror/r/history.json").read_text())
    h2 = json.loads((tmp_path / "two/runs/mirror/r/history.json").read_text())
    m2 = json.loads((tmp_path / "two/runs/mirror/r/metrics.json").read_text())
    assert (m2["strategy"], m2["replicas"], m2["global_batch_size"]) == ("mirrored", 2, 32)
    for key in ("loss", "val_loss"):
        assert h2[key] == pytest.approx(h1[key], rel=1e-3), key
    assert "16 per replica" in workers.log(two)


# -------------------------------------------------------------------------------------------- workers
def test_three_workers_agree_and_only_the_chief_writes(tmp_path, workers):
    before = stray_worker_dirs()
    spec = tiny_spec(tmp_path, "three")
    procs = workers.cluster(3, spec, tmp_path / "art", "--run-id", "r", label="w")
    assert workers.wait(procs) == [0, 0, 0], workers.logs()
    # Same losses and accuracies everywhere (wall times differ): one model, all-reduced.
    reports = [report_lines(workers.log(p)) for p in procs]
    assert len(reports[0]) == 3, workers.logs()
    assert reports[0] == reports[1] == reports[2]
    # Exactly one export, and nothing in the run dir but the chief's files: no backup left, no worker temp dirs.
    art = tmp_path / "art"
    assert [p.name for p in (art / "models" / "three").iterdir()] == ["1"]
    assert sorted(p.name for p in (art / "runs" / "three" / "r").iterdir()) == [
        "accuracy.png", "checkpoints", "history.csv", "history.json", "loss.png", "metrics.json",
        "model_summary.txt", "spec.yaml",
    ]
    assert all_files(art / "runs" / "three" / "r" / "checkpoints") == ["best.weights.h5"]
    assert not [f for f in all_files(art) if "workertemp" in f or ".tmp" in f]
    assert stray_worker_dirs() <= before
    metrics = json.loads((art / "runs/three/r/metrics.json").read_text())
    assert (metrics["strategy"], metrics["workers"], metrics["replicas"]) == ("multi_worker", 3, 3)
    info = json.loads((art / "models/three/1/jobctl.json").read_text())
    assert info["input_name"] == "images" and info["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    # The export has the single-process contract: serving_default(images uint8) -> probabilities, class_ids.
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(str(art / "models/three/1")).signatures["serving_default"]
    out = serve(images=tf.constant(np.zeros((2, 8, 8, 1), np.uint8)))
    assert {k: v.shape.as_list() for k, v in out.items()} == {"class_ids": [2], "probabilities": [2, 10]}


def test_killed_worker_then_restart_resumes_at_the_next_epoch(tmp_path, workers):
    """Worker 1 is killed once the first epoch is backed up: the chief exits 76 (retry), and the restarted job
    (same --run-id, as the Kubernetes Job passes) goes on after the last finished epoch, exporting once."""
    before = stray_worker_dirs()
    spec = tiny_spec(tmp_path, "resume", **{"data.max_train_examples": 600, "training.epochs": 3})
    art = tmp_path / "art"
    run_dir = art / "runs" / "resume" / "r"
    first = workers.cluster(2, spec, art, "--run-id", "r", label="a")
    marker = run_dir / "backup" / "chief" / "checkpoint"  # written by BackupAndRestore after an epoch
    deadline = time.monotonic() + HARD_TIMEOUT
    while not marker.exists():
        assert time.monotonic() < deadline and all(p.poll() is None for p in first), workers.logs()
        time.sleep(0.1)
    first[1].kill()
    assert workers.wait(first[:1], timeout=90)[0] == exit_codes.PEER_UNAVAILABLE, workers.logs()
    failed = json.loads((run_dir / "metrics.json").read_text())
    assert failed["status"] == "failed" and failed["epochs_finished"] >= 1
    done_before = failed["epochs_finished"]
    assert done_before < 3, "the kill came too late to test a resume"

    second = workers.cluster(2, spec, art, "--run-id", "r", label="b")
    assert workers.wait(second) == [0, 0], workers.logs()
    reports = [report_lines(workers.log(p)) for p in second]
    assert reports[0] == reports[1]  # both workers report the same losses
    for p in second:
        text = workers.log(p)
        assert f"resumed: epochs 1-{done_before} restored" in text, text
        assert epoch_lines(text) == list(range(done_before + 1, 4)), text  # starts at the next epoch
    history = json.loads((run_dir / "history.json").read_text())
    assert history["epochs"] == [1, 2, 3] and len(history["loss"]) == 3  # none lost, none twice
    assert [p.name for p in (art / "models" / "resume").iterdir()] == ["1"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "succeeded" and metrics["epochs_run"] == 3
    assert not (run_dir / "backup").exists()
    assert stray_worker_dirs() <= before  # the restarted worker 1 removed what its killed predecessor left


def test_sigterm_saves_exits_75_and_the_retry_resumes(tmp_path, workers):
    # Enough epochs that the SIGTERM sent after the first lands mid-run (a digits epoch takes ~0.1 s here).
    epochs = 40
    spec = tiny_spec(tmp_path, "term", **{"data.max_train_examples": 1000, "training.epochs": epochs})
    art = tmp_path / "art"
    run_dir = art / "runs" / "term" / "r"
    proc = workers.start(spec, art, "--run-id", "r", label="t")
    marker = run_dir / "backup" / "training_metadata.json"  # Keras 3 BackupAndRestore, after an epoch
    workers.sigterm_once_backed_up(proc, marker)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "preempted" and record["epochs_finished"] >= 1
    assert "SIGTERM" in workers.log(proc)
    finished = json.loads(marker.read_text())["epoch"]
    assert not (art / "models").exists() or not any((art / "models").rglob("saved_model.pb"))

    retry = workers.start(spec, art, "--run-id", "r", label="t2")
    assert workers.wait([retry]) == [0], workers.logs()
    assert epoch_lines(workers.log(retry)) == list(range(finished + 1, epochs + 1))
    history = json.loads((run_dir / "history.json").read_text())
    assert history["epochs"] == list(range(1, epochs + 1))
    # A third start of the finished run (a pod retried after success) does nothing: still one export.
    again = workers.start(spec, art, "--run-id", "r", label="t3")
    assert workers.wait([again]) == [0]
    assert "already succeeded" in workers.log(again)
    assert [p.name for p in (art / "models" / "term").iterdir()] == ["1"]


def test_a_resumed_run_trains_exactly_as_an_uninterrupted_one(tmp_path, workers):
    """SIGTERM after the first backed-up epoch, then the retry: the same losses, epoch by epoch, as a run that was
    never stopped. The input order of each epoch is fixed by (seed, epoch) and the dropout masks' seed states are
    kept beside the backup, so nothing restarts from epoch 1's randomness."""
    epochs = 30  # enough that the signal lands mid-run
    spec = tiny_spec(tmp_path, "exact", **{"data.max_train_examples": 600, "training.epochs": epochs,
                                           "training.deterministic": True, "model.dropout": 0.3})
    whole = workers.start(spec, tmp_path / "whole", "--run-id", "r", label="whole")
    assert workers.wait([whole]) == [0], workers.logs()

    art = tmp_path / "stopped"
    proc = workers.start(spec, art, "--run-id", "r", label="stopped")
    workers.sigterm_once_backed_up(proc, art / "runs" / "exact" / "r" / "backup" / "training_metadata.json", poll=0.02)
    retry = workers.start(spec, art, "--run-id", "r", label="retry")
    assert workers.wait([retry]) == [0], workers.logs()
    assert "resumed: epochs 1-" in workers.log(retry)

    h_whole = json.loads((tmp_path / "whole" / "runs" / "exact" / "r" / "history.json").read_text())
    h_resumed = json.loads((art / "runs" / "exact" / "r" / "history.json").read_text())
    assert h_resumed["epochs"] == list(range(1, epochs + 1))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert h_resumed[key] == pytest.approx(h_whole[key], rel=1e-6, abs=1e-7), key


def _stop_in_the_middle_of_an_epoch(workers, spec: Path, art: Path, metadata: Path, attempts: int = 5) -> dict:
    """Start and SIGTERM the run as soon as its backup is a mid-epoch one, until the backup it leaves behind is one
    (a signal can land just after an epoch's end): returns that backup's position."""
    for attempt in range(attempts):
        proc = workers.start(spec, art, "--run-id", "r", label=f"stopped{attempt}")
        deadline = time.monotonic() + HARD_TIMEOUT
        while True:
            assert time.monotonic() < deadline and proc.poll() is None, workers.logs()
            try:
                if json.loads(metadata.read_text()).get("batches_done"):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert workers.wait([proc], timeout=60) == [exit_codes.PREEMPTED], workers.logs()
        position = json.loads(metadata.read_text())
        if position.get("batches_done"):
            return position
    pytest.fail(f"no mid-epoch backup left after {attempts} SIGTERMs:\n{workers.logs()}")


def test_a_run_killed_in_the_middle_of_an_epoch_resumes_exactly(tmp_path, workers):
    """training.backup_every_steps: SIGTERM between two epoch ends, then the retry trains only the rest of the
    interrupted epoch (the batches after the backup, with that step's dropout seed states and running metrics):
    the same losses, epoch by epoch, the interrupted one included, as a run never stopped."""
    epochs = 12
    spec = tiny_spec(tmp_path, "mid", **{"data.max_train_examples": 600, "training.epochs": epochs,
                                         "training.deterministic": True, "model.dropout": 0.3,
                                         "training.backup_every_steps": 3})  # 19 batches an epoch (600 / 32)
    whole = workers.start(spec, tmp_path / "whole", "--run-id", "r", label="whole")
    assert workers.wait([whole]) == [0], workers.logs()

    art = tmp_path / "stopped"
    position = _stop_in_the_middle_of_an_epoch(workers, spec, art, art / "runs" / "mid" / "r" / "backup" /
                                               "training_metadata.json")
    assert position["batches_done"] % 3 == 0 and 0 < position["batches_done"] < 19
    retry = workers.start(spec, art, "--run-id", "r", label="retry")
    assert workers.wait([retry]) == [0], workers.logs()
    log = workers.log(retry)
    assert f"resumed: epoch {position['epoch'] + 1} from batch {position['batches_done'] + 1} of 19" in log, log[-3000:]
    assert epoch_lines(log) == list(range(position["epoch"] + 1, epochs + 1))  # the interrupted epoch, once

    h_whole = json.loads((tmp_path / "whole" / "runs" / "mid" / "r" / "history.json").read_text())
    h_resumed = json.loads((art / "runs" / "mid" / "r" / "history.json").read_text())
    assert h_resumed["epochs"] == list(range(1, epochs + 1))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert h_resumed[key] == pytest.approx(h_whole[key], rel=1e-6, abs=1e-7), key


def test_each_worker_reads_its_own_examples(tmp_path, workers):
    """The pipeline's auto-shard policy under two workers: every example once per epoch, none on both."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, sys, numpy as np\n"
        "from jobs import distribute\n"
        "from jobs.pipeline import make_dataset\n"
        "info = distribute.select_strategy('auto', worker_timeout=90)\n"
        "import tensorflow as tf\n"
        "n = 203  # not a multiple of the global batch: the last batch is split unevenly\n"
        "ids = np.arange(n)\n"
        "x = np.stack([ids // 256, ids % 256], axis=1).astype('uint8').reshape(n, 2, 1, 1)\n"
        "ds = make_dataset(x, np.zeros(n, 'int64'), 2, 16, training=True, seed=3)\n"
        "seen = []\n"
        "for batch in info.strategy.experimental_distribute_dataset(ds):\n"
        "    for t in info.strategy.experimental_local_results(batch[0]):\n"
        "        a = t.numpy().reshape(-1, 2).astype(int)\n"
        "        seen += (a[:, 0] * 256 + a[:, 1]).tolist()\n"
        "print('SEEN', json.dumps(seen), flush=True)\n"
    )
    ports = free_ports(2)
    procs = []
    for i in range(2):
        log = tmp_path / f"p{i}.log"
        procs.append(subprocess.Popen([sys.executable, str(probe)], cwd=ROOT, env=env_for(TF_CONFIG=tf_config(ports, i)),
                                      stdout=log.open("w"), stderr=subprocess.STDOUT))
        workers.procs.append((procs[-1], log))
    assert workers.wait(procs) == [0, 0], workers.logs()
    seen = [json.loads(next(ln for ln in workers.log(p).splitlines() if ln.startswith("SEEN"))[5:]) for p in procs]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(203))
    assert abs(len(seen[0]) - len(seen[1])) <= 16


# --------------------------------------------------------------------------------------- bounded failures
def test_malformed_tf_config_is_a_bad_spec_not_a_hang(tmp_path, workers):
    spec = tiny_spec(tmp_path, "bad")
    proc = workers.start(spec, tmp_path / "art", label="bad", TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:1"]')
    assert workers.wait([proc], timeout=60) == [exit_codes.BAD_SPEC]
    assert "TF_CONFIG: expected JSON" in workers.log(proc)


def test_peer_that_never_comes_up_fails_within_the_timeout(tmp_path, workers):
    spec = tiny_spec(tmp_path, "alone", **{"distribution.worker_timeout_seconds": 5})
    ports = free_ports(2)
    started = time.monotonic()
    proc = workers.start(spec, tmp_path / "art", label="alone", TF_CONFIG=tf_config(ports, 0))
    assert workers.wait([proc], timeout=90) == [exit_codes.PEER_UNAVAILABLE], workers.logs()
    text = workers.log(proc)
    assert "never answered; not all of them joined within 5 s (distribution.worker_timeout_seconds)" in text
    assert time.monotonic() - started < 60  # TensorFlow's import plus the 5 s, not TensorFlow's own hour
