"""One training run: load data -> build the model under the chosen strategy -> fit with the habits the seed
notebooks ask for (seeds, best checkpoint, early stopping, TensorBoard, CSV history, plots, model summary) ->
evaluate the best weights on the test set -> export them for TF Serving -> write metrics.json.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from jobs import contract
from jobs.contract import RunStatus
from jobs.errors import BadInputError, Preempted
from jobs.fsutil import atomic_write_json, atomic_write_text
from jobs.spec import JobSpec, SpecError
from jobs.training.callbacks import BestWeights, EarlyStop, EpochLine
from jobs.training.device_augmentation import device_augmented
from jobs.training.optim import batch_and_learning_rate, lr_callbacks, make_optimizer, precision_policy
from jobs.training.reports import plot_history, write_summary_and_diagram
from jobs.training.resume import (BACKUP_DIR, BackupPosition, EpochJournal, SeedStates, backup_callback,
                                  finished_epochs, read_metrics, restore_epoch_metrics)


@dataclass
class RunResult:
    run_dir: Path
    export_path: Optional[Path]
    metrics: dict[str, Any]


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def seed_everything(seed: int, deterministic: bool, keras_module=None) -> None:
    import keras
    import tensorflow as tf

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)  # also seeds Python, NumPy and TensorFlow's global generator
    if keras_module is not None and keras_module is not keras:
        keras_module.utils.set_random_seed(seed)  # tf-keras keeps its own generators
    if deterministic:
        tf.config.experimental.enable_op_determinism()



def run(
    spec: JobSpec,
    **kwargs,
) -> RunResult:
    """Train `spec`; on failure, `metrics.json` records status "failed" and the error before re-raising."""
    from jobs.distribute import is_chief_process

    run_id = kwargs.pop("run_id", None) or new_run_id()
    if not RUN_ID.fullmatch(run_id) or ".." in run_id:
        # It names a directory under runs/<name>/: a '/' or '..' would put the run somewhere `jobctl runs` never looks.
        raise SpecError([f"--run-id: expected letters, digits, '.', '_', '-' (1 to 100, no '..'), received {run_id!r}"],
                        "arguments")
    root = Path(kwargs.get("artifacts_dir") or spec.artifacts_dir)
    fresh = not contract.run_dir(root, spec.name, run_id).exists()
    if fresh and kwargs.get("export", True) and isinstance(spec.export.version, int):
        # A fixed version that is already taken would fail the export after the whole training: refuse it first.
        from jobs.export import next_version

        next_version(contract.model_base_path(root, spec.model_name), spec.export.version)
    try:
        return _run(spec, run_id=run_id, **kwargs)
    except BaseException as exc:
        run_dir = contract.run_dir(root, spec.name, run_id)
        previous = read_metrics(run_dir)
        # Only the chief writes the run directory; a finished run's record is never overwritten.
        if run_dir.is_dir() and is_chief_process() and previous.get("status") != RunStatus.SUCCEEDED:
            if isinstance(exc, Preempted):
                status = RunStatus.PREEMPTED
            elif isinstance(exc, KeyboardInterrupt):
                status = RunStatus.INTERRUPTED
            else:
                status = RunStatus.FAILED
            atomic_write_json(
                run_dir / contract.METRICS_FILE,
                {"status": status, "run_dir": str(run_dir), "error": f"{exc.__class__.__name__}: {exc}",
                 "epochs_finished": finished_epochs(run_dir)},
            )
        raise



def _run(
    spec: JobSpec,
    *,
    artifacts_dir: Optional[str] = None,
    run_id: Optional[str] = None,
    virtual_devices: int = 0,
    export: bool = True,
    out=None,
) -> RunResult:
    """Train `spec` to completion; returns where everything went. Raises on failure."""
    import shutil
    import tempfile

    # Resolved per call, not at import: a caller that swapped sys.stdout (a CLI test runner) may have closed it.
    out = out or sys.stdout

    from jobs import distribute

    root = Path(artifacts_dir or spec.artifacts_dir)
    shared_run_dir = contract.run_dir(root, spec.name, run_id)
    done = read_metrics(shared_run_dir)
    if done.get("status") == RunStatus.SUCCEEDED:
        if done.get("spec_hash") not in (None, spec.spec_hash()):
            raise SpecError([f"--run-id {run_id}: that run already succeeded with another spec "
                             f"({shared_run_dir / contract.RUN_SPEC_FILE}); expected a new --run-id to train this one"], "arguments")
        # A retried pod of a finished run (or the same --run-id twice): training again would export twice.
        # Every worker reads the same file, so all of them stop here, before meeting.
        print(f"run {shared_run_dir} already succeeded; nothing to do (a new --run-id trains again)", file=out)
        path = done.get("export_path")
        return RunResult(shared_run_dir, Path(path) if path else None, done)
    # SIGTERM while waiting for peers or loading data is a preemption too (exit 75, not a kill by signal).
    with distribute.PreemptionGuard() as guard:
        # Devices and the cluster must be configured before any other TensorFlow call.
        info = distribute.select_strategy(
            spec.distribution.strategy, virtual_devices, worker_timeout=spec.distribution.worker_timeout_seconds
        )
        guard.reinstall()  # TensorFlow's coordination service may have put its own SIGTERM handler in place
        # Only the chief writes the run directory; the other workers write the same files into a directory of
        # their own that they delete, so every code path (and every collective inside a save) is the same for all.
        if info.is_chief:
            run_dir = shared_run_dir
        else:
            prefix = f"jobctl-worker{info.task_index}-{spec.name}-{run_id}-"
            for stale in Path(tempfile.gettempdir()).glob(prefix + "*"):  # left by a killed predecessor
                shutil.rmtree(stale, ignore_errors=True)
            run_dir = Path(tempfile.mkdtemp(prefix=prefix))
        try:
            return _train(spec, info, root, shared_run_dir, run_dir, export=export, out=out)
        finally:
            if not info.is_chief:
                shutil.rmtree(run_dir, ignore_errors=True)


def _train(spec: JobSpec, info, root: Path, shared_run_dir: Path, run_dir: Path, *, export: bool, out) -> RunResult:
    seed_everything(spec.seed, spec.training.deterministic, info.keras)

    from jobs.inputs import load_inputs

    t0 = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / contract.RUN_SPEC_FILE, spec.to_yaml())

    # In memory, or streamed from files (packed shards, large image folders): jobs/inputs.py chooses and says why.
    data = load_inputs(spec.data, num_workers=info.workers, worker_index=info.task_index)
    with data.corrupt_data_is_bad_input():
        return _fit_and_export(spec, info, data, root, shared_run_dir, run_dir, t0, export=export, out=out)


def _fit_and_export(spec: JobSpec, info, data, root: Path, shared_run_dir: Path, run_dir: Path, t0: float, *,
                    export: bool, out) -> RunResult:
    from jobs import distribute
    from jobs.export import export_model, run_metadata
    from jobs.models import build_model
    from jobs.pipeline import repeat_for_fit, steps_per_call

    keras = info.keras  # Keras 3, or tf-keras under MultiWorkerMirroredStrategy (see jobs/distribute.py)
    num_train, num_val, num_test = data.counts["train"], data.counts["validation"], data.counts["test"]
    for note in data.notes:
        print(f"data: {note}", file=out)
    print(f"data: {data.mode}: {data.reason}", file=out)
    print(
        f"data: {spec.data.dataset} train {num_train}, validation {num_val}, test {num_test}, "
        f"input {data.input_shape}, {data.num_classes} classes",
        file=out,
    )

    t = spec.training
    replicas = info.replicas
    global_batch, learning_rate = batch_and_learning_rate(t, replicas, even_split=info.kind == "mirrored")
    steps_per_epoch = max(1, -(-num_train // global_batch))
    # Several steps per call only without a tf.distribute strategy (one device: the CPU or one GPU). Under
    # MirroredStrategy Keras 3.15's multi-step loop fails ("You must feed a value for placeholder tensor" from a
    # cond in the replica context; keras-team/keras#19246, reproduced here with 2 logical devices), and tf-keras
    # (multi-worker) was not checked for an epoch boundary inside a call.
    every = t.backup_every_steps
    if every and info.legacy_keras:  # the spec check covers resources.workers; this, a TF_CONFIG set by hand
        raise BadInputError(f"training.backup_every_steps: {every} in a multi-worker run; expected one worker (tf-keras "
                            "draws a new input order each epoch: a mid-epoch resume could not be exact)")
    # A mid-epoch backup lands at the end of a call: calls that divide both the epoch and the backup interval keep
    # every backup at the same batch as asked, and the rest of a resumed epoch a whole number of calls.
    per_call = (steps_per_call(t.steps_per_execution, math.gcd(steps_per_epoch, every) if every else steps_per_epoch)
                if info.kind == "default" else 1)
    engine = f"tf-keras {keras.__version__}" if info.legacy_keras else f"keras {keras.__version__}"
    print(
        f"strategy: {info.kind}, {replicas} replica(s)"
        + (f" on {info.workers} workers, this is worker {info.task_index}{' (chief)' if info.is_chief else ''}" if info.workers > 1 else "")
        + f"; global batch {global_batch} ({global_batch / replicas:g} per replica); learning rate {learning_rate:g}; "
        + (f"{per_call} steps per call; " if per_call > 1 else "") + engine,
        file=out,
    )

    build_kwargs = dict(
        x_adapt=data.adapt_sample() if spec.preprocessing.standardize else None, name=spec.name.replace("-", "_"),
    )
    with precision_policy(keras, t.mixed_precision), info.strategy.scope():
        model = info.models.build_model(
            spec.model, spec.preprocessing, data.input_shape, data.num_classes, data.pixel_max, **build_kwargs
        )
        trainer = model
        if spec.augmentation.placement == "device" and spec.augmentation.enabled:
            trainer = device_augmented(keras, model, spec.augmentation, spec.seed, data.input_shape)
        trainer.compile(
            optimizer=make_optimizer(spec, learning_rate, steps_per_epoch, keras),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=t.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            jit_compile=t.jit_compile,
            steps_per_execution=per_call,
        )
    # tf-keras trains; a Keras 3 twin (outside the strategy) holds the weights for the checkpoint and the export,
    # so the files are those of a single-process run.
    twin = None
    if info.legacy_keras:
        import keras as keras3

        with precision_policy(keras3, t.mixed_precision):
            twin = build_model(spec.model, spec.preprocessing, data.input_shape, data.num_classes, data.pixel_max, **build_kwargs)

    # Keras 3 takes every epoch's pass from one endless dataset, each pass's order fixed by (seed, epoch): a run
    # resumed from its backup starts at the backed-up epoch and sees the orders an uninterrupted run would have.
    # (tf-keras, multi-worker, takes a fresh one-pass iterator per epoch: a new random order each time.)
    position = BackupPosition() if info.legacy_keras else BackupPosition.read(shared_run_dir / BACKUP_DIR)
    first_epoch = None if info.legacy_keras else position.epoch
    if first_epoch and first_epoch > t.epochs:  # (equal: fit had finished; the journal resumes the export)
        raise BadInputError(f"training.epochs: {t.epochs}, but this run's backup already holds {first_epoch} finished "
                         f"epochs; expected at least {first_epoch} to resume it, or a new --run-id")

    def train_passes(from_epoch):
        return data.train_dataset(
            global_batch, seed=spec.seed, augmentation=spec.augmentation, shuffle_buffer=t.shuffle_buffer,
            deterministic=t.deterministic, from_epoch=from_epoch,
        )

    train_ds = train_passes(first_epoch)
    val_ds = data.eval_dataset("validation", global_batch, seed=spec.seed)
    steps = {}
    rest_of_epoch = None  # a mid-epoch resume: (the dataset of the epoch's remaining batches, their count)
    if not info.legacy_keras:  # tf-keras under MultiWorkerMirroredStrategy keeps one epoch per pass of its shards
        train_ds, steps["steps_per_epoch"] = repeat_for_fit(train_ds, num_train, global_batch)
        if position.batches_done:
            # The backed-up epoch's own order, minus the batches its weights have seen; then the next epochs.
            # skip() still draws the skipped batches, so any randomness in the pipeline stays where it was.
            rest_of_epoch = (train_ds.skip(position.batches_done), steps_per_epoch - position.batches_done)
            train_ds = repeat_for_fit(train_passes(first_epoch + 1), num_train, global_batch)[0]
        repeated_val, validation_steps = repeat_for_fit(val_ds, num_val, global_batch)
        # A multi-step call stops where a one-pass dataset ends, while over a repeated one it would score batches
        # of the next pass: repeat validation only when its batches divide into whole calls.
        if validation_steps % per_call == 0:
            val_ds, steps["validation_steps"] = repeated_val, validation_steps
    train_ds, val_ds = distribute.distribute_input(info, train_ds), distribute.distribute_input(info, val_ds)
    if rest_of_epoch is not None:
        rest_of_epoch = (distribute.distribute_input(info, rest_of_epoch[0]), rest_of_epoch[1])
    test_ds = data.eval_dataset("test", global_batch, seed=spec.seed)

    diagram_note = write_summary_and_diagram(twin if twin is not None else model, run_dir)
    if diagram_note:
        print(f"note: {diagram_note}", file=out)

    cb = spec.callbacks
    monitor, mode = cb.checkpoint.monitor, cb.checkpoint.resolved_mode()
    journal = EpochJournal(shared_run_dir, run_dir)
    # Shared: only the chief writes it (its run_dir is shared_run_dir); any worker may read it back in restore().
    ckpt_path = shared_run_dir / contract.BEST_WEIGHTS_FILE
    best = BestWeights(monitor, mode, ckpt_path, write=info.is_chief, twin=twin)
    early = None
    if cb.early_stopping.enabled:
        es = cb.early_stopping
        early = EarlyStop(es.monitor, es.resolved_mode(), es.patience, es.min_delta)

    schedule = lr_callbacks(spec, learning_rate, keras)

    def on_resume(epoch: int, history: dict) -> None:
        if first_epoch is not None and epoch != first_epoch:  # Keras fell back to the previous backup
            print(f"note: resumed at epoch {epoch + 1}, but the input order was set up for epoch {first_epoch + 1} "
                  "(the last backup was unreadable): shuffling stays uniform, not the uninterrupted run's order",
                  file=out, flush=True)
        if epoch == 0:
            return
        print(f"resumed: epochs 1-{epoch} restored from {shared_run_dir / BACKUP_DIR}", file=out, flush=True)
        # Every callback that watches a metric gets the epochs before the restart, with no side effects.
        for watcher in [best, early] + [getattr(c, "watcher", None) for c in schedule]:
            if watcher is not None:
                watcher.replay(history)

    callbacks: list = [
        journal.callback(keras, on_resume),
        best.callback(keras),
        EpochLine(t.epochs, monitor, mode, num_train, out).callback(keras),
        *schedule,
    ]
    if early is not None:
        callbacks.append(early.callback(keras))
    if cb.tensorboard.enabled:
        callbacks.append(
            keras.callbacks.TensorBoard(
                log_dir=str(run_dir / "tensorboard"), histogram_freq=cb.tensorboard.histogram_freq,
                profile_batch=cb.tensorboard.profile_batch,
            )
        )
    # Last: an epoch in the backup is in the journal and the best checkpoint already. The backup dir holds
    # nothing else but the seed states (Keras 3); every worker names the shared one (tf-keras sends the others to
    # temporary sub-directories).
    backup_dir = shared_run_dir / BACKUP_DIR
    seed_states = None if info.legacy_keras else SeedStates(backup_dir)
    if seed_states is not None:
        callbacks.append(seed_states.writer(keras))
    backup = backup_callback(keras, backup_dir, every, legacy=info.legacy_keras)
    callbacks.append(backup)
    if seed_states is not None:
        callbacks.append(seed_states.restorer(keras))
    if rest_of_epoch is not None:
        callbacks.append(restore_epoch_metrics(keras, position))

    fit_start = time.perf_counter()
    if journal.complete:
        print(f"resumed: fit had finished ({len(journal.rows)} epochs); evaluating and exporting", file=out)
        best.replay(journal.history)
    else:
        fit_kwargs = dict(validation_data=val_ds, callbacks=callbacks, verbose=0, shuffle=False, **steps)
        if rest_of_epoch is not None:
            # Keras restarts a backed-up epoch from its first batch: this fit trains only the batches after the
            # backup (one epoch of them), the next one the epochs after it. The same callbacks see both.
            print(f"resumed: epoch {first_epoch + 1} from batch {position.batches_done + 1} of {steps_per_epoch}",
                  file=out, flush=True)
            backup.batch_offset = position.batches_done
            # Keras builds the compiled metrics on their first update: one validation batch builds them (nothing
            # trains, no randomness is drawn), so the restored running totals have variables to go into.
            trainer.evaluate(val_ds, steps=1, verbose=0)
            trainer.fit(rest_of_epoch[0], epochs=first_epoch + 1, **{**fit_kwargs, "steps_per_epoch": rest_of_epoch[1]})
        if rest_of_epoch is None or (first_epoch + 1 < t.epochs and not (early and early.stop_requested)):
            trainer.fit(train_ds, epochs=t.epochs, **fit_kwargs)
    fit_seconds = time.perf_counter() - fit_start
    hist = journal.history
    epochs_run = len(journal.rows)
    if monitor not in hist:
        raise BadInputError(
            f"callbacks.checkpoint.monitor: metric {monitor!r} was never logged. Received: monitor={monitor!r}; "
            f"expected one of {sorted(hist)}"
        )
    values = hist[monitor]
    if best.best_epoch is None:
        raise FloatingPointError(f"{monitor} was never finite: training diverged (try a lower learning rate)")
    best_index = best.best_epoch

    # The best epoch by the monitor, not the last one, is what gets evaluated and exported.
    best.restore(trainer)  # the twin (if any) already holds these weights: no copy back needed
    test_loss, test_accuracy = trainer.evaluate(test_ds, verbose=0)

    journal.write(complete=True)
    plot_history(hist, run_dir)
    metrics: dict[str, Any] = {
        "status": RunStatus.SUCCEEDED,
        "run_dir": str(shared_run_dir),
        "spec_hash": spec.spec_hash(),
        "model_name": spec.model_name,
        "monitor": monitor,
        "best_epoch": best_index + 1,
        "best_val_accuracy": max(hist.get("val_accuracy", [float("nan")])),
        "best_val_loss": min(hist.get("val_loss", [float("nan")])),
        "best_monitor_value": values[best_index],
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "epochs_run": epochs_run,
        "fit_seconds": fit_seconds,
        "images_per_second": num_train * epochs_run / max(fit_seconds, 1e-9),
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "data_mode": data.mode,
        "skipped_records": sum(data.skipped().values()),  # data.corrupt_records: skip (each named in the log)
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "pixel_max": data.pixel_max,
        "class_names": data.class_names,
        "replicas": replicas,
        "workers": info.workers,
        "strategy": info.kind,
        "engine": engine,
        "global_batch_size": global_batch,
        "learning_rate": learning_rate,
        "export_path": None,
        "version": None,
    }

    export_path = None
    if export and info.is_chief:
        export_path = export_model(
            twin if twin is not None else model,
            contract.models_root(root),
            spec.model_name,
            class_names=data.class_names,
            input_shape=data.input_shape,
            input_dtype=spec.export.input_dtype,
            version=spec.export.version,
            pixel_max=data.pixel_max,
            warmup_samples=data.images("test", spec.export.warmup_requests),
            metadata=run_metadata(spec.spec_hash(), shared_run_dir, metrics),
        )
        metrics["export_path"] = str(export_path)
        metrics["version"] = int(export_path.name)
    metrics["wall_time_seconds"] = time.perf_counter() - t0
    atomic_write_json(run_dir / contract.METRICS_FILE, metrics)
    if info.is_chief:
        import shutil

        shutil.rmtree(shared_run_dir / BACKUP_DIR, ignore_errors=True)  # the run is recorded: nothing to resume

    print(
        f"best epoch {metrics['best_epoch']}/{epochs_run} ({monitor} {values[best_index]:.4f}); "
        f"test accuracy {test_accuracy:.4f}, test loss {test_loss:.4f}; {metrics['wall_time_seconds']:.1f}s",
        file=out,
    )
    print(f"run:    {shared_run_dir}", file=out)
    if export_path:
        print(f"export: {export_path}", file=out)
    return RunResult(shared_run_dir, export_path, metrics)

