"""The contract between training, serving, the sweep controller and the CLI: where a run and a model live, what the
exported signature is called, and the status a run records. Each of these facts is spelled here and nowhere else.

Imports nothing of the project (import-linter keeps it so): every package may depend on it.
"""

from __future__ import annotations

import enum
from pathlib import Path, PurePosixPath
from typing import Union

PathLike = Union[str, Path]

# --- artifacts layout -------------------------------------------------------------------------------------------
# <artifacts>/runs/<name>/<run-id>/ holds one training run; <artifacts>/models/<model>/<version>/ one SavedModel.
RUNS_DIR = "runs"
MODELS_DIR = "models"
SWEEPS_DIR = "sweeps"
METRICS_FILE = "metrics.json"
LEADERBOARD_FILE = "leaderboard.json"
MODEL_METADATA_FILE = "jobctl.json"  # beside saved_model.pb in every exported version
CLASS_NAMES_ASSET = "class_names.txt"  # under assets/
RUN_SPEC_FILE = "spec.yaml"  # in a run directory: the resolved spec it trained
BEST_WEIGHTS_FILE = "checkpoints/best.weights.h5"  # in a run directory: the best epoch's weights (Keras 3 format)
# Where the pods mount the artifacts PersistentVolumeClaim, and the claim's default name (k8s/base ships it).
ARTIFACTS_MOUNT = "/artifacts"
ARTIFACTS_CLAIM = "jobctl-artifacts"


def runs_root(artifacts_dir: PathLike) -> Path:
    return Path(artifacts_dir) / RUNS_DIR


def run_dir(artifacts_dir: PathLike, name: str, run_id: str) -> Path:
    return Path(artifacts_dir) / RUNS_DIR / name / run_id


def artifacts_of_run(run_directory: PathLike) -> Path:
    """The artifacts directory a run directory (<artifacts>/runs/<name>/<run-id>) lives in."""
    return Path(run_directory).parents[2]


def metrics_path(artifacts_dir: PathLike, name: str, run_id: str) -> Path:
    return run_dir(artifacts_dir, name, run_id) / METRICS_FILE


def models_root(artifacts_dir: PathLike) -> Path:
    return Path(artifacts_dir) / MODELS_DIR


def model_base_path(artifacts_dir: PathLike, model_name: str) -> Path:
    """TF Serving's `--model_base_path`: integer version directories live under it."""
    return Path(artifacts_dir) / MODELS_DIR / model_name


def model_version_dir(artifacts_dir: PathLike, model_name: str, version: int) -> Path:
    return model_base_path(artifacts_dir, model_name) / str(int(version))


def sweep_dir(artifacts_dir: PathLike, sweep_name: str) -> Path:
    return Path(artifacts_dir) / SWEEPS_DIR / sweep_name


def pod_path(*parts: str) -> str:
    """A path inside a pod, under the artifacts mount (always POSIX, whatever machine renders the manifest)."""
    return str(PurePosixPath(ARTIFACTS_MOUNT, *parts))


# --- the exported model's signature (TF Serving's API) --------------------------------------------------------------
SIGNATURE_NAME = "serving_default"  # TF Serving's default; an empty signature_name in a request means this
INPUT_NAME = "images"  # raw uint8 (or float) pixels [batch, height, width, channels]
OUTPUT_PROBABILITIES = "probabilities"  # float32 [batch, classes]
OUTPUT_CLASS_IDS = "class_ids"  # int64 [batch]
WARMUP_FILE = "tf_serving_warmup_requests"  # under assets.extra/


# --- run status, as metrics.json and the sweep state record it ------------------------------------------------------
class RunStatus(str, enum.Enum):
    """A run's or a trial's state. `str` so it compares equal to, and serialises as, its JSON value."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    STOPPED = "stopped"  # stopped by the scheduler (e.g. a Hyperband rung that was not promoted)
    PRUNED = "pruned"  # stopped early by a pruner: a result, not a failure
    FAILED = "failed"
    PREEMPTED = "preempted"  # SIGTERM after saving state: will resume
    INTERRUPTED = "interrupted"  # Ctrl-C (KeyboardInterrupt): state saved as far as it got; a re-run resumes

    def __str__(self) -> str:  # f"{status}" gives "succeeded", not "RunStatus.SUCCEEDED"
        return self.value

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.STOPPED, RunStatus.PRUNED, RunStatus.FAILED)
