"""`jobctl sweep`, `jobctl results`, `jobctl best`: hyperparameter sweeps and their leaderboard (docs/sweeps.md).

No TensorFlow here: trials are subprocesses (local) or Jobs (Kubernetes); matplotlib only for `results`' plot.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from cli.common import check_output_file, console, fail
from jobs import contract, exit_codes

INTERRUPTED = 130  # the shell's code for SIGINT


class BackendName(str, Enum):
    local = "local"
    k8s = "k8s"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _load_sweep(path: Path, sweep_dir: Optional[Path], artifacts_dir: Optional[Path] = None):
    from jobs import contract
    from sweeps.spec import load_sweep

    sweep = load_sweep(path)  # a SpecError (exit 2) lists every problem
    if artifacts_dir:
        sweep.artifacts_dir = artifacts_dir
        if not sweep.spec.sweep_dir:
            sweep.sweep_dir = contract.sweep_dir(artifacts_dir, sweep.name)
    if sweep_dir:
        sweep.sweep_dir = sweep_dir
    return sweep


def _refuse_a_different_sweep(sweep) -> None:
    """What the real run checks first (`SweepState.open`): a sweep directory holding another sweep, or trials
    recorded with other parameters, is refused with the same message and exit code. Writes nothing: with a
    sweep.json present, `open` only reads and compares."""
    from sweeps.state import STATE, SweepState

    if (sweep.sweep_dir / STATE).is_file():
        SweepState.open(sweep)  # raises SweepError (exit 2)


def _progress_printer(metric: str):
    def attempt(p) -> str:
        return f" (attempt {p.attempt + 1})" if p.attempt else ""

    def show(p) -> None:
        c = p.counts
        done = c["succeeded"] + c["pruned"] + c["failed"]
        head = (f"[{done}/{c['total']} done, {c['running']} running, {c['failed']} failed"
                + (f", {c['pruned']} pruned" if c["pruned"] else "") + (f", {c['paused']} paused" if c["paused"] else "")
                + "]")
        best = f"  best {p.best['trial']} {metric} {p.best['value']:.4f}" if p.best else ""
        rec = p.record or {}
        if p.kind == "resumed":
            line = f"resuming: {p.skipped} finished run(s) skipped" + (f", {p.rerun} interrupted run(s) to run again" if p.rerun else "")
        elif p.kind == "started":
            line = f"{p.trial}{attempt(p)} started ({rec.get('epochs')} epochs)"
        elif p.kind in ("pruned", "paused", "promoted"):
            line = f"{p.trial} [yellow]{p.kind}[/] at epoch {rec.get('epoch')}"
        elif p.kind == "finished":
            status = rec.get("status")
            detail = f"{metric} {rec['value']:.4f}" if rec.get("value") is not None else (rec.get("error") or "")
            colour = {"succeeded": "green", "failed": "red"}.get(status, "yellow")
            line = f"{p.trial}{attempt(p)} [{colour}]{status}[/] {detail[:160]}"
        elif p.kind == "interrupted":
            line = "[yellow]interrupted[/]: active trials stopped, state saved; run the same command to resume"
        else:
            line = "[bold]sweep finished[/]"
        console.print(f"{head} {line}{best}", highlight=False, soft_wrap=True)

    return show


def sweep_command(
    sweep_spec: Path = typer.Argument(..., help="the sweep spec (YAML), see docs/sweeps.md"),
    backend: BackendName = typer.Option(BackendName.local, "--backend", "-b", help="where trials run"),
    parallelism: Optional[int] = typer.Option(None, "--parallelism", "-p", min=1, help="at most N trials at once (default: the spec's, else what the cores allow)"),
    restart: bool = typer.Option(False, "--restart", help="forget recorded runs and start over"),
    sweep_dir: Optional[Path] = typer.Option(None, "--sweep-dir", help="default: <artifacts_dir>/sweeps/<name>"),
    artifacts_dir: Optional[Path] = typer.Option(None, "--artifacts-dir", help="where runs/ and models/ are (k8s: where the artifacts claim is mounted here)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and list the trials; run nothing"),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="k8s: default the kubeconfig context's namespace"),
    context: Optional[str] = typer.Option(None, "--context", help="k8s: kubeconfig context (default: the current one)"),
    kubeconfig: Optional[str] = typer.Option(None, "--kubeconfig", help="k8s: default $KUBECONFIG, ~/.kube/config, in-cluster"),
    image: Optional[str] = typer.Option(None, "--image", help="k8s: training image (default: resources.image, then this jobctl's)"),
    poll_seconds: float = typer.Option(5.0, "--poll", help="k8s: seconds between Job status checks"),
) -> None:
    """Run a hyperparameter sweep (grid, random, tpe or gp; optionally pruned), resuming from its sweep directory."""
    from sweeps.scheduler import SweepInterrupted, run_sweep
    from sweeps.spec import default_parallelism

    sweep = _load_sweep(sweep_spec, sweep_dir, artifacts_dir)
    par = parallelism or sweep.spec.parallelism or (default_parallelism() if backend == BackendName.local else 4)
    alg, pruner = sweep.spec.algorithm, sweep.spec.pruner
    console.print(
        f"sweep [bold]{sweep.name}[/]: {sweep.max_trials} trials, {alg.type}"
        + (f", pruner {pruner.type}" if pruner.type != "none" else "")
        + f", objective {sweep.spec.objective.mode} {sweep.spec.objective.metric}, parallelism {par}, "
        f"backend {backend.value}; {sweep.sweep_dir}",
        highlight=False,
    )
    if dry_run:
        if not restart:
            _refuse_a_different_sweep(sweep)
        if backend == BackendName.k8s:
            from sweeps.backends.kubernetes import K8sBackend

            K8sBackend(sweep, client=None, image=image).prepare()  # renders every Job, no cluster needed; exit 2
        for t in sweep.trials:
            console.print(f"  {t.id}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()), highlight=False)
        if not sweep.planned:
            console.print(f"  {sweep.max_trials} trials proposed by {alg.type} as results arrive (the first "
                          f"{min(alg.n_startup_trials, sweep.max_trials)} drawn at random, seed {alg.seed})",
                          highlight=False)
        return
    if backend == BackendName.local:
        from sweeps.backends.local import LocalBackend

        runner = LocalBackend(sweep, parallelism=par)
        poll = 0.5
    else:
        from sweeps.backends.kubernetes import K8sBackend

        runner = K8sBackend.from_environment(sweep, namespace=namespace, context=context, kubeconfig=kubeconfig,
                                             image=image)
        poll = poll_seconds
    import signal

    def _terminate(signum, frame):
        raise KeyboardInterrupt  # SIGTERM (kill, a pod's end) stops as cleanly as Ctrl-C

    import threading

    # Signal handlers belong to the main thread (tests and embedders may call this command from another one).
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main else None
    try:
        outcome = run_sweep(sweep, runner, parallelism=par, restart=restart, poll_seconds=poll,
                            on_progress=_progress_printer(sweep.spec.objective.metric))
    except SweepInterrupted:  # Ctrl-C is not an error: the shell's code for SIGINT
        raise typer.Exit(INTERRUPTED)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    _print_table(outcome.leaderboard[:10], title="leaderboard (top 10)")
    console.print(f"leaderboard: {Path(outcome.sweep_dir) / contract.LEADERBOARD_FILE}", highlight=False)
    if outcome.counts["succeeded"] == 0:
        fail("no trial succeeded; see the errors above and the logs in the sweep directory")


def _print_table(entries: list[dict], title: Optional[str] = None) -> None:
    from rich.table import Table

    from sweeps.leaderboard import param_names

    if not entries:
        console.print("no trials")
        return
    params = param_names(entries)
    metric = entries[0]["objective"]
    table = Table(title=title, show_lines=False)
    for col in ("#", "trial", "status", metric, *params, "epochs", "test_accuracy", "export / error"):
        table.add_column(col, overflow="fold")
    for e in entries:
        m = e.get("metrics") or {}
        last = e.get("export_path") or (f"[red]{e['error'][:120]}[/]" if e.get("error") else "")
        table.add_row(
            str(e["rank"]), e["trial"], e["status"], _fmt(e.get("value")),
            *[_fmt(e["params"].get(p)) for p in params], _fmt(e.get("epochs", m.get("epochs_run"))), _fmt(m.get("test_accuracy")), last,
        )
    console.print(table)


def _leaderboard(sweep: str):
    from sweeps.leaderboard import load_leaderboard, resolve_sweep_dir

    d = resolve_sweep_dir(sweep)  # SpecError, SweepError: exit 2
    return d, load_leaderboard(d)


def results_command(
    sweep: str = typer.Argument(..., help="a sweep directory, a sweep spec file, or a sweep name under artifacts/sweeps"),
    as_json: bool = typer.Option(False, "--json", help="print the leaderboard as JSON"),
    as_csv: bool = typer.Option(False, "--csv", help="print the leaderboard as CSV"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="where to write the PNG (default: <sweep>/objective.png); also writes Optuna's parameter importance and parallel coordinates beside it"),
    no_plot: bool = typer.Option(False, "--no-plot", help="skip the PNG"),
    metric: Optional[str] = typer.Option(None, "--metric", help=f"plot this {contract.METRICS_FILE} key instead of the objective (e.g. test_loss)"),
) -> None:
    """The leaderboard, best first: each trial's parameters, objective and metrics; a PNG of objective vs parameters."""
    from sweeps.leaderboard import to_csv
    from sweeps.plot import plot_objective
    from sweeps.state import METRIC_KEYS

    # Arguments first, before any work; all of them exit 2 (bad arguments).
    if as_json and as_csv:
        fail("choose one of --json and --csv", exit_codes.BAD_SPEC)
    if metric is not None and metric not in METRIC_KEYS:
        fail(f"--metric {metric}: not a metric a trial records; expected one of {', '.join(METRIC_KEYS)}",
             exit_codes.BAD_SPEC)
    if plot:
        check_output_file(plot, "--plot")
    d, entries = _leaderboard(sweep)
    written, study_plots = None, []
    if not no_plot:
        if metric:
            finished = [e for e in entries if e.get("status") in ("succeeded", "pruned")]
            reported = sorted({k for e in finished for k, v in (e.get("metrics") or {}).items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)})
            if finished and metric not in reported:
                fail(f"--metric {metric}: no finished trial of this sweep reports it; expected one of "
                     f"{', '.join(reported) or '(none reported)'}", exit_codes.BAD_SPEC)
        target = plot or d / (f"{metric}.png" if metric else "objective.png")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            written = plot_objective(entries, target, metric)
            if plot:  # Optuna's views, only when asked: they import Optuna, which a plain `results` never does
                from sweeps.plot import plot_study

                study_plots = plot_study(d, target)
        except OSError as exc:
            fail(f"{'--plot ' if plot else 'plot '}{target}: cannot write it ({exc.strerror or exc})",
                 exit_codes.BAD_SPEC if plot else exit_codes.FAILURE)
    if as_json:
        sys.stdout.write(json.dumps(entries, indent=2) + "\n")
    elif as_csv:
        sys.stdout.write(to_csv(entries))
    else:
        _print_table(entries, title=f"sweep {d.name}")
        for path in [written, *study_plots] if written else study_plots:
            console.print(f"plot: {path}", highlight=False)


def best_command(
    sweep: str = typer.Argument(..., help="a sweep directory, a sweep spec file, or a sweep name under artifacts/sweeps"),
    top: int = typer.Option(1, "--top", "-k", min=1, help="how many of the best trials"),
    as_json: bool = typer.Option(False, "--json", help="a JSON list of {trial, value, params, export_path}"),
) -> None:
    """The export paths of the best K succeeded trials, best first, one per line (ready for the ensemble)."""
    from sweeps.leaderboard import best_exports

    d, entries = _leaderboard(sweep)
    paths = best_exports(entries, top)  # NotEnoughTrialsError: exit 1
    if as_json:
        by_path = {e.get("export_path"): e for e in entries}
        out = [{k: by_path[p].get(k) for k in ("rank", "trial", "value", "objective", "params", "export_path")} for p in paths]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write("".join(p + "\n" for p in paths))


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
    app.command("results")(results_command)
    app.command("best")(best_command)
