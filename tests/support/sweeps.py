"""Sweep test helpers: a tiny real job spec, and a fake trainer that keeps jobs.train's contract (metrics.json,
history.json after every epoch, SIGTERM saves a backup and exits 75, the same run id resumes) in milliseconds."""

from __future__ import annotations

import sys


# Real training, kept tiny: 300 digits, an MLP, 2 epochs; no TensorBoard, one warmup record.
TINY = {
    "name": "tiny",
    "data": {"dataset": "digits", "max_train_examples": 300},
    "model": {"type": "mlp", "dense_units": [32]},
    "training": {"epochs": 2, "batch_size": 32},
    "callbacks": {"tensorboard": {"enabled": False}, "csv_history": False},
    "export": {"warmup_requests": 1},
}

# A stand-in for `python -m jobs.train` that writes the same metrics.json contract in milliseconds: the value is a
# function of the learning rate and the epochs, dropout 0.9 fails, FAKE_SLEEP makes it slow enough to interrupt.
FAKE_TRAINER = r'''
import json, math, os, signal, sys, time, yaml
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
spec = yaml.safe_load(open(args["--spec"]))
run_dir = os.path.join(args["--artifacts-dir"], "runs", spec["name"], args["--run-id"])
os.makedirs(run_dir, exist_ok=True)
metrics_path = os.path.join(run_dir, "metrics.json")
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
if spec["model"]["dropout"] >= 0.9:
    json.dump({"status": "failed", "error": "FloatingPointError: loss is NaN"}, open(metrics_path, "w"))
    print("error: training failed: FloatingPointError: loss is NaN", file=sys.stderr)
    sys.exit(1)
lr, epochs = spec["training"]["learning_rate"], spec["training"]["epochs"]
def accuracy(epoch):
    return round((1 - abs(math.log10(lr) + 2) / 4) * (1 - 0.5 / epoch), 6)
def write(path, data):
    json.dump(data, open(path + ".tmp", "w"))
    os.replace(path + ".tmp", path)
# Like jobs.train: history.json after every epoch, a backup of the last finished epoch; SIGTERM saves and exits 75,
# and the same run id resumes from the backup.
os.makedirs(os.path.join(run_dir, "backup"), exist_ok=True)
backup = os.path.join(run_dir, "backup", "training_metadata.json")  # where Keras 3's BackupAndRestore says
history_path = os.path.join(run_dir, "history.json")
start = json.load(open(backup))["epoch"] if os.path.exists(backup) else 0
history = json.load(open(history_path)) if start else {"epochs": [], "val_accuracy": [], "val_loss": []}
history = {k: v[:start] for k, v in history.items() if isinstance(v, list)}
def preempted(*_):
    write(metrics_path, {"status": "preempted", "error": "SIGTERM"})
    sys.exit(75)
signal.signal(signal.SIGTERM, preempted)
for epoch in range(start + 1, epochs + 1):
    time.sleep(float(os.environ.get("FAKE_EPOCH_SLEEP", "0")))
    if os.environ.get("FAKE_KILL_AT") == f"{spec['name']}/{args['--run-id']}:{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-epoch: no metrics.json
    history["epochs"].append(epoch)
    history["val_accuracy"].append(accuracy(epoch))
    history["val_loss"].append(1 - accuracy(epoch))
    write(history_path, history)
    write(backup, {"epoch": epoch})
value = max(history["val_accuracy"])
export = os.path.join(args["--artifacts-dir"], "models", spec["export"]["model_name"], "1")
os.makedirs(export, exist_ok=True)
open(os.path.join(export, "saved_model.pb"), "wb").close()  # a stand-in: enough for the ensemble's member lookup
write(metrics_path, {"status": "succeeded", "best_val_accuracy": value, "best_val_loss": 1 - value,
                     "test_accuracy": value, "epochs_run": epochs, "export_path": export, "run_dir": run_dir,
                     "resumed_from": start})
'''


def make_fake_command(tmp_path):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINER)
    return lambda spec, artifacts, run_id: [sys.executable, str(script), "--spec", str(spec), "--artifacts-dir",
                                            str(artifacts), "--run-id", run_id]


def sweep_data(tmp_path, **kw) -> dict:
    out = {"name": "sw", "base": TINY, "parallelism": 2, "sweep_dir": str(tmp_path / "sweep"),
           "artifacts_dir": str(tmp_path / "artifacts")}
    out.update(kw)
    return out


