"""The pieces of distributed training that need no cluster: TF_CONFIG checks, the peer rendezvous, SIGTERM,
weight copies between tf-keras and Keras 3, the resumable history, and the exit codes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from jobs import distribute, exit_codes, train
from jobs.errors import DataUnavailableError, PeerUnavailableError, Preempted
from jobs.training import optim
from jobs.training.callbacks import BestWeights
from jobs.training.resume import EpochJournal
from jobs.spec import JobSpec
from jobs.tf_config import TFConfigError
from bench.common import free_ports as _ports


def _cfg(cluster, task):
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}


def test_tf_config_explicit_and_from_the_indexed_job():
    cfg = distribute.cluster_config(_cfg({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 1}))
    assert distribute.task_position(cfg) == (2, 1)
    env = {"JOBCTL_WORKERS": "3", "JOB_COMPLETION_INDEX": "0", "JOBCTL_JOB_NAME": "j", "JOBCTL_SERVICE": "s"}
    cfg = distribute.cluster_config(env)
    assert cfg["cluster"]["worker"] == ["j-0.s:2222", "j-1.s:2222", "j-2.s:2222"]
    assert distribute.task_position(cfg) == (3, 0)
    assert distribute.cluster_config({}) is None and distribute.task_position(None) == (1, 0)
    # A separate chief is position 0, the workers follow it.
    cfg = distribute.cluster_config(_cfg({"chief": ["c:1"], "worker": ["w:1"]}, {"type": "worker", "index": 0}))
    assert distribute.task_position(cfg) == (2, 1)


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"TF_CONFIG": "{not json"}, "TF_CONFIG: expected JSON"),
        (_cfg({"worker": ["a:1"], "ps": ["p:1"]}, {"type": "worker", "index": 0}), "'chief' and 'worker' tasks only"),
        (_cfg({"worker": ["a:1"], "evaluator": ["e:1"]}, {"type": "evaluator", "index": 0}), "Received: cluster jobs"),
        (_cfg({"worker": ["a", "b:x"]}, {"type": "worker", "index": 0}), "expects 'host:port' strings"),
        (_cfg({"worker": ["a:1"]}, {"type": "worker", "index": 3}), "is not in cluster"),
        ({"JOBCTL_WORKERS": "2", "JOB_COMPLETION_INDEX": "5", "JOBCTL_JOB_NAME": "j", "JOBCTL_SERVICE": "s"},
         "JOB_COMPLETION_INDEX"),
    ],
)
def test_malformed_cluster_config_names_the_problem(env, fragment):
    with pytest.raises(TFConfigError, match=None) as err:
        distribute.cluster_config(env)
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)  # run_with_exit_code: BAD_SPEC, never retried


def test_multi_worker_without_a_cluster_is_a_clear_error():
    with pytest.raises(ValueError, match="'multi_worker' needs a cluster"):
        distribute.select_strategy("multi_worker", env={})




def test_rendezvous_meets_every_peer_and_times_out_on_a_missing_one():
    hosts = [f"127.0.0.1:{p}" for p in _ports(3)]
    errors = []

    def worker(i):
        try:
            distribute.wait_for_peers(hosts, i, timeout=20)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.3)  # staggered starts, as pods come up
    for t in threads:
        t.join(30)
    assert errors == []

    started = time.monotonic()
    with pytest.raises(PeerUnavailableError, match=r"127\.0\.0\.1:\d+ never answered.*within 1 s"):
        distribute.wait_for_peers([f"127.0.0.1:{p}" for p in _ports(2)], 0, timeout=1)
    assert time.monotonic() - started < 5


def test_sigterm_raises_preempted_in_the_main_thread_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    exits = []
    with pytest.raises(Preempted):
        with distribute.PreemptionGuard(grace=30, exit=exits.append):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):
                time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) == before
    assert exits == []  # unwound in time: the grace backstop did not fire


def test_weights_copy_between_tf_keras_and_keras3_by_layer_name():
    import keras

    from jobs.models import build_model

    legacy = distribute.legacy_models()
    assert legacy.keras.__name__.startswith("tf_keras") and legacy is distribute.legacy_models()
    assert "keras" in __import__("sys").modules and keras.__version__.startswith("3.")  # Keras 3 untouched
    spec = JobSpec(name="x", model={"type": "cnn", "conv_filters": [4], "dense_units": [8], "batch_norm": True,
                                    "padding": "same"}, preprocessing={"standardize": True})
    x = np.random.default_rng(0).integers(0, 17, (16, 8, 8, 1)).astype("uint8")
    old = legacy.build_model(spec.model, spec.preprocessing, (8, 8, 1), 10, 16, x_adapt=x)
    new = build_model(spec.model, spec.preprocessing, (8, 8, 1), 10, 16, x_adapt=x[:2] * 0)
    # Batch-norm statistics are non-trainable: tf-keras lists them after every trainable weight, Keras 3 per layer.
    for layer in old.layers:
        if layer.weights:
            rng = np.random.default_rng(1)
            layer.set_weights([np.abs(rng.normal(size=w.shape)).astype("float32") + 0.5 for w in layer.get_weights()])
            if hasattr(layer, "finalize_state"):
                layer.finalize_state()
    distribute.copy_weights(old, new)
    xf = x.astype("float32")
    np.testing.assert_allclose(new.predict(xf, verbose=0), old.predict(xf, verbose=0), rtol=1e-4, atol=1e-4)
    other = build_model(spec.model.model_copy(update={"dense_units": [9]}), spec.preprocessing, (8, 8, 1), 10, 16, x_adapt=x)
    with pytest.raises(ValueError, match="layer 'dense0' has weights"):
        distribute.copy_weights(old, other)


def test_journal_keeps_each_epoch_once_across_a_restart(tmp_path):
    first = EpochJournal(tmp_path, tmp_path)
    for epoch in range(3):
        first.add(epoch, {"loss": 1.0 / (epoch + 1), "val_accuracy": 0.1 * epoch})
    # Epoch 3 (0-based 2) was cut short of its backup: the restart trains it again from epoch index 2.
    again = EpochJournal(tmp_path, tmp_path)
    assert len(again.rows) == 3 and not again.complete
    again.truncate(2)
    again.add(2, {"loss": 0.3, "val_accuracy": 0.25})
    again.write(complete=True)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["epochs"] == [1, 2, 3] and saved["loss"] == [1.0, 0.5, 0.3] and saved["complete"] is True
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == "epoch,loss,val_accuracy"
    best = BestWeights("val_accuracy", "max", tmp_path / "b.weights.h5", write=False)
    best.replay(again.history)
    assert (best.best, best.best_epoch) == (0.25, 2)


@pytest.mark.parametrize(
    "exc, code",
    [
        (Preempted("SIGTERM"), exit_codes.PREEMPTED),
        (PeerUnavailableError("gone"), exit_codes.PEER_UNAVAILABLE),
        (TFConfigError("TF_CONFIG: bad"), exit_codes.BAD_SPEC),
        (DataUnavailableError("data.path: /x is missing"), exit_codes.DATA_UNAVAILABLE),
        # Issue 13's one behaviour change: an unexpected error (a TensorFlow ValueError, say) is retried (1); before,
        # any ValueError exited 2 and failed the Job for good. Deliberate bad input still exits 2.
        (ValueError("Shapes (None, 3) and (None, 4) are incompatible"), exit_codes.FAILURE),
        (RuntimeError("boom"), exit_codes.FAILURE),
    ],
    ids=["preempted", "peer", "tf-config", "data", "stray-value-error", "stray-runtime-error"],
)
def test_failures_map_to_the_documented_exit_codes(monkeypatch, exc, code):
    def fail(spec, **kwargs):
        raise exc

    monkeypatch.setattr(train, "run", fail)
    assert train.run_with_exit_code(JobSpec(name="x")) == code


def test_tensorflow_peer_errors_are_retriable():
    import tensorflow as tf

    assert distribute.is_peer_failure(tf.errors.UnavailableError(None, None, "Collective ops is aborted by: x"))
    assert not distribute.is_peer_failure(ValueError("bad"))


@pytest.mark.parametrize(
    "training, replicas, expected",
    [
        ({"batch_size": 64}, 4, (64, 1e-3)),  # global (default): split, 16 per replica
        ({"batch_size": 64, "batch_size_per": "replica"}, 4, (256, 1e-3)),
        ({"batch_size": 64, "batch_size_per": "replica", "scale_learning_rate": True}, 4, (256, 4e-3)),
        ({"batch_size": 32}, 1, (32, 1e-3)),
    ],
)
def test_batch_size_semantics_and_learning_rate_scaling(training, replicas, expected):
    spec = JobSpec(name="x", training=training)
    global_batch, lr = optim.batch_and_learning_rate(spec.training, replicas)
    assert (global_batch, pytest.approx(lr)) == expected


def test_a_global_batch_smaller_than_the_replicas_is_rejected():
    with pytest.raises(ValueError, match="cannot be split across 4 replicas"):
        optim.batch_and_learning_rate(JobSpec(name="x", training={"batch_size": 2}).training, 4)


def test_mirrored_needs_a_batch_that_splits_evenly_multi_worker_does_not():
    t = JobSpec(name="x", training={"batch_size": 32}).training
    with pytest.raises(ValueError, match="cannot be split evenly across 3 replicas.*expected a multiple of 3"):
        optim.batch_and_learning_rate(t, 3, even_split=True)
    assert optim.batch_and_learning_rate(t, 3) == (32, t.learning_rate)  # tf-keras multi-worker: uneven shares
    assert optim.batch_and_learning_rate(t, 4, even_split=True)[0] == 32


def test_cpu_replicas_get_a_dataset_distributed_without_prefetch_to_device():
    """On CPU replicas the engine distributes the dataset itself (no host-to-host copy per batch); GPU replicas
    and the default strategy leave that to Keras, which prefetches to the device."""
    import keras
    import tensorflow as tf

    from jobs import models

    ds = tf.data.Dataset.from_tensor_slices(np.arange(8, dtype=np.float32)).batch(4)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    cpu = distribute.StrategyInfo(mirrored, "mirrored", 1, keras=keras, models=models, devices=["/device:CPU:0"])
    out = distribute.distribute_input(cpu, ds)
    assert isinstance(out, tf.distribute.DistributedDataset)
    assert sorted(np.concatenate([mirrored.experimental_local_results(b)[0].numpy() for b in out]).tolist()) == list(range(8))
    gpu = distribute.StrategyInfo(mirrored, "mirrored", 1, keras=keras, models=models, devices=["/device:GPU:0"])
    default = distribute.StrategyInfo(tf.distribute.get_strategy(), "default", 1, keras=keras, models=models)
    assert distribute.distribute_input(gpu, ds) is ds and distribute.distribute_input(default, ds) is ds
