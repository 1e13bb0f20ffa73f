"""`jobctl render | submit | status | list | logs | cancel`: training jobs on Kubernetes.

Nothing here imports TensorFlow, and the kubernetes client is imported only by the commands that talk to a
cluster (inside k8s.transport, on first request): `render` contacts nothing. Errors are raised; cli.main maps
them (a k8s.errors.KubeError exits 1, a bad argument or manifest 2).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from cli.common import (check_output_dir, console, err_console, load_job_spec, parse_overrides,
                        write_manifests_or_exit)
from jobs import exit_codes
from jobs.errors import BadInputError

NamespaceOpt = typer.Option(None, "--namespace", "-n", help="default: the kubeconfig context's namespace, or 'default'")
ContextOpt = typer.Option(None, "--context", help="kubeconfig context (default: the current one)")
KubeconfigOpt = typer.Option(None, "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
SetOpt = typer.Option(None, "--set", help="FIELD.PATH=VALUE spec override (repeatable)")


def _objects(spec_path: Path, overrides, *, run_id, name, namespace, image):
    """The job's objects (render and submit); a likely failure in the pod is a warning on stderr."""
    from k8s.jobset import build_objects
    from k8s.manifests import data_path_warnings
    from k8s.sizing import gpu_waste_warnings

    spec = load_job_spec(spec_path, parse_overrides(overrides))
    objects = build_objects(spec, run_id=run_id, name=name, namespace=namespace, image=image)
    for warning in data_path_warnings(spec) + gpu_waste_warnings(spec):
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    return objects


def _client(namespace, context, kubeconfig):
    """A JobClient; its kubernetes ApiClient is created on the first request. A namespace no object can live in
    is refused before any configuration is read."""
    from k8s.client import JobClient
    from k8s.common import validate_dns1123

    if namespace is not None:
        validate_dns1123(namespace, "--namespace")
    return JobClient(namespace, context=context, kubeconfig=kubeconfig)


def _job_name(job: str) -> str:
    """JOB checked before any client exists: an empty name would address every Job in the namespace."""
    from k8s.client import check_object_name

    return check_object_name(job, "JOB")


def render(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="the job spec (YAML)"),
    out: Path = typer.Option(..., "--out", "-o", help="directory to write the manifests into"),
    overrides: Optional[List[str]] = SetOpt,
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="set metadata.namespace"),
    image: Optional[str] = typer.Option(None, "--image", help="training image (default: resources.image, then jobctl's)"),
    name: Optional[str] = typer.Option(None, "--name", help="Job name (default: the spec's name)"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="run directory name (default: UTC now)"),
) -> None:
    """Write the job's Kubernetes manifests (one YAML file per object). Contacts nothing."""
    check_output_dir(out, "-o/--out")
    objects = _objects(spec_path, overrides, run_id=run_id, name=name, namespace=namespace, image=image)
    write_manifests_or_exit(objects, out, "-o/--out")
    console.print(
        f"apply with: kubectl apply -k k8s/base{' -n ' + namespace if namespace else ''}  (once per namespace), "
        f"then kubectl apply -f {out}",
        highlight=False,
    )


def submit(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="the job spec (YAML)"),
    overrides: Optional[List[str]] = SetOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="server-side dry run: checks everything, creates nothing"),
    wait: bool = typer.Option(False, "--wait/--detach", help="wait for the result, streaming the chief's logs"),
    replace: bool = typer.Option(False, "--replace", help="delete a Job of the same name first"),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=0.001, help="with --wait: give up after this many seconds"),
    namespace: Optional[str] = NamespaceOpt,
    context: Optional[str] = ContextOpt,
    kubeconfig: Optional[str] = KubeconfigOpt,
    image: Optional[str] = typer.Option(None, "--image", help="training image (default: resources.image, then jobctl's)"),
    name: Optional[str] = typer.Option(None, "--name", help="Job name (default: the spec's name)"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="run directory name (default: UTC now)"),
) -> None:
    """Create the job's ConfigMap, Service and Job; all or nothing. With --wait, exit 0 on success, 1 on failure."""
    objects = _objects(spec_path, overrides, run_id=run_id, name=name, namespace=None, image=image)
    client = _client(namespace, context, kubeconfig)
    created = client.submit(objects, replace=replace, dry_run=dry_run)
    job_name = objects[-1]["metadata"]["name"]
    from k8s.client import WOULD_REPLACE

    verb = "would create" if dry_run else "created"
    for obj in created:
        this = "would replace" if obj.get(WOULD_REPLACE) else verb
        console.print(f"{this} {obj.get('kind', '?').lower()}/{obj['metadata']['name']} in namespace {client.namespace}", highlight=False)
    if dry_run:
        return
    if not wait:
        console.print(f"follow with: jobctl logs {job_name} -f -n {client.namespace}; jobctl status {job_name}", highlight=False)
        return
    report = _wait_streaming(client, job_name, timeout)
    _print_report(report)
    raise typer.Exit(exit_codes.OK if report.state == "Succeeded" else exit_codes.FAILURE)


def _wait_streaming(client, job_name: str, timeout: Optional[float]):
    """Stream the chief's logs on a thread while polling the Job for its outcome."""

    def stream():
        try:  # ends by itself once the Job has finished and the last pod's log is read
            for _, line in client.logs(job_name, follow=True):
                console.print(line, highlight=False, markup=False, soft_wrap=True)
        except Exception as exc:  # logs are a convenience here: never let them change the exit code
            err_console.print(f"(log streaming stopped: {exc})", highlight=False, markup=False)

    def show_state(report):
        if report.state == "Queued" and report.queue:  # until Kueue admits it: its queue, position and reason
            err_console.print(f"job {job_name}: queued; {report.queue.line()}", highlight=False, markup=False)
        else:
            err_console.print(f"job {job_name}: {report.state.lower()}", highlight=False, markup=False)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    client.wait(job_name, timeout=timeout, on_change=show_state)
    thread.join(timeout=5)  # the last lines, while the stream drains; a hung stream cannot hold the exit
    return client.status(job_name)  # with the pods, for the final table


def _print_report(report) -> None:
    from rich.table import Table

    colour = {"Succeeded": "green", "Failed": "red", "Running": "cyan"}.get(report.state, "yellow")
    console.print(
        f"{report.kind.lower()} [bold]{report.name}[/] in {report.namespace or '?'}: [{colour}]{report.state}[/]"
        f"  workers {report.workers}, active {report.active}, succeeded {report.succeeded}, failed {report.failed}",
        highlight=False,
    )
    if report.message:
        console.print(f"  {report.message}", highlight=False, markup=False)
    if report.queue:
        console.print(f"  {report.queue.line()}", highlight=False, markup=False)
    for c in report.conditions:
        text = f"  condition {c.get('type')}={c.get('status')}"
        if c.get("reason"):
            text += f" ({c['reason']})"
        if c.get("message"):
            text += f": {c['message']}"
        console.print(text, highlight=False, markup=False)
    if not report.pods:
        console.print("  no pods", highlight=False)
        return
    table = Table(box=None, pad_edge=False)
    for col in ("WORKER", "POD", "PHASE", "STATE", "RESTARTS", "NODE", "EXIT", "WHY"):
        table.add_column(col, overflow="fold")
    for p in report.pods:
        table.add_row(
            "-" if p.index is None else str(p.index), p.name, p.phase, p.state, str(p.restarts), p.node,
            "" if p.exit_code is None else str(p.exit_code), p.detail,
        )
    console.print(table)


def status(
    job: str = typer.Argument(..., help="the Job name"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    namespace: Optional[str] = NamespaceOpt,
    context: Optional[str] = ContextOpt,
    kubeconfig: Optional[str] = KubeconfigOpt,
) -> None:
    """The Job's conditions and, for each pod: phase, restarts, node, and why it is not running."""
    _job_name(job)
    client = _client(namespace, context, kubeconfig)
    report = client.status(job)
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        _print_report(report)


def list_jobs(
    selector: Optional[str] = typer.Option(None, "--selector", "-l", help="label selector, e.g. team=vision"),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="only the trials of this sweep"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    namespace: Optional[str] = NamespaceOpt,
    context: Optional[str] = ContextOpt,
    kubeconfig: Optional[str] = KubeconfigOpt,
) -> None:
    """jobctl's Jobs in the namespace, newest first."""
    from rich.table import Table

    from k8s.common import LABEL_SWEEP, LABEL_TRIAL

    terms = [t for t in (selector, f"{LABEL_SWEEP}={sweep}" if sweep else None) if t]
    client = _client(namespace, context, kubeconfig)
    reports = client.list(",".join(terms) or None)
    if as_json:
        console.print_json(json.dumps([
            {k: v for k, v in r.to_dict().items() if k != "pods"} for r in reports
        ]))
        return
    if not reports:
        console.print(f"no jobctl jobs in namespace {client.namespace}", highlight=False)
        return
    table = Table(box=None, pad_edge=False)
    queued = any(r.queue for r in reports)
    for col in ("NAME", "STATE", "WORKERS", "ACTIVE", "SUCCEEDED", "FAILED", "CREATED", "SWEEP", "TRIAL") + (
            ("QUEUE",) if queued else ()):
        table.add_column(col, overflow="fold")
    for r in reports:
        table.add_row(
            r.name, r.state, str(r.workers), str(r.active), str(r.succeeded), str(r.failed), r.created,
            r.labels.get(LABEL_SWEEP, ""), r.labels.get(LABEL_TRIAL, ""),
            *((r.queue.line() if r.queue else "",) if queued else ()),
        )
    console.print(table)


def logs(
    job: str = typer.Argument(..., help="the Job name"),
    follow: bool = typer.Option(False, "--follow", "-f", help="stream, and continue with the new pod after a retry"),
    worker: Optional[int] = typer.Option(None, "--worker", min=0, help="this worker's logs (default: 0, the chief)"),
    all_workers: bool = typer.Option(False, "--all", help="every worker's logs, each line prefixed"),
    tail: Optional[int] = typer.Option(None, "--tail", min=1, help="only the last N lines"),
    namespace: Optional[str] = NamespaceOpt,
    context: Optional[str] = ContextOpt,
    kubeconfig: Optional[str] = KubeconfigOpt,
) -> None:
    """Print (or stream) a job's logs, prefixed with the worker when there are several."""
    if worker is not None and all_workers:
        raise BadInputError("--worker and --all: choose one")
    _job_name(job)
    client = _client(namespace, context, kubeconfig)

    def show():
        from k8s.backends import workers as workers_of

        obj = client.workload(job)  # read once (Job or JobSet): worker count, pods, and the logs themselves
        total = workers_of(obj)
        if worker is not None and worker >= total:
            raise BadInputError(f"--worker {worker}: job {job!r} has {total} worker{'s' if total != 1 else ''} "
                                f"(expected 0..{total - 1})")
        workers = list(range(total)) if all_workers else [worker] if worker is not None else None
        prefix = all_workers and len(workers) > 1
        if follow and not client.pods(obj):  # otherwise -f sits silent until a pod starts
            err_console.print(f"waiting for a pod of job {job} to start (Ctrl-C stops)", highlight=False)
        for index, line in client.logs(job, follow=follow, workers=workers, tail_lines=tail, job=obj):
            console.print(f"[worker {index}] {line}" if prefix else line, highlight=False, markup=False, soft_wrap=True)

    try:
        show()
    except KeyboardInterrupt:
        raise typer.Exit(130)


def cancel(
    job: str = typer.Argument(..., help="the Job name"),
    namespace: Optional[str] = NamespaceOpt,
    context: Optional[str] = ContextOpt,
    kubeconfig: Optional[str] = KubeconfigOpt,
) -> None:
    """Delete the Job (or JobSet), its pods (foreground propagation), its spec ConfigMap and Service. Artifacts stay."""
    _job_name(job)
    client = _client(namespace, context, kubeconfig)
    kind = client.delete(job)
    console.print(f"deleted {kind.lower()}/{job} in namespace {client.namespace} (pods are terminating)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("render")(render)
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("list")(list_jobs)
    app.command("logs")(logs)
    app.command("cancel")(cancel)
