"""Serving commands: ensemble, evaluate, serve, predict (docs/serving.md; `deploy` is in commands_deploy.py).

TensorFlow is imported inside the commands that need it, never at import time: `jobctl --help` and
`jobctl predict --help` stay fast.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from cli.common import check_output_dir, check_output_file, console, fail
from jobs import exit_codes
from jobs.contract import SIGNATURE_NAME


def _labels(pairs: Optional[list[str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs or []:
        label, sep, version = pair.partition("=")
        if not sep or not label or not version.isdigit():
            fail(f"--label expects LABEL=VERSION (e.g. stable=3), received {pair!r}", exit_codes.BAD_SPEC)
        out[label] = int(version)
    return out


def ensemble(
    exports: Optional[list[Path]] = typer.Argument(None, help="member exports: version dirs or model base paths"),
    output: Path = typer.Option(..., "-o", "--output", help="the ensemble's model base path (TF Serving layout)"),
    sweep: Optional[Path] = typer.Option(None, "--sweep", help="a sweep: its directory, spec file or name"),
    top: Optional[int] = typer.Option(None, "--top", min=1, help="with --sweep: the best K trials"),
    weights: Optional[list[str]] = typer.Option(None, "--weights", help="one per member: 1,1,2 or repeat; normalized"),
    member_outputs: bool = typer.Option(True, "--member-outputs/--no-member-outputs",
                                        help="also return each member's probabilities (member_probabilities)"),
    version: Optional[int] = typer.Option(None, "--version", min=1, help="version number (default: next)"),
) -> None:
    """Fuse members into one SavedModel whose default signature returns their (weighted) mean probabilities."""
    if bool(exports) == bool(sweep):
        fail("give member EXPORT paths or --sweep SWEEP (not both, not neither)", exit_codes.BAD_SPEC)
    check_output_dir(output, "-o/--output")
    if top is not None and not sweep:
        fail("--top applies to --sweep; with explicit EXPORT paths, list the members you want", exit_codes.BAD_SPEC)
    parsed: Optional[list[float]] = None
    if weights:
        try:
            parsed = [float(w) for item in weights for w in item.split(",") if w.strip()]
        except ValueError:
            fail(f"--weights: expected numbers (e.g. 1,1,2), received {weights}", exit_codes.BAD_SPEC)
    if sweep:
        from jobs.spec import SpecError
        from sweeps.errors import SweepError
        from sweeps.leaderboard import resolve_sweep_dir

        try:  # as `jobctl results` and `best` take it: a directory, a sweep spec file or a sweep name
            sweep = resolve_sweep_dir(sweep)
        except (SweepError, SpecError) as exc:
            fail(f"--sweep: {exc}", exit_codes.BAD_SPEC)
    from serving.ensemble import build_ensemble, resolve_members

    members = resolve_members(sweep if sweep else exports, top=top)
    path = build_ensemble(members, output, weights=parsed, include_member_probabilities=member_outputs, version=version)
    console.print(f"ensemble of {len(members)} members written to [bold]{path}[/]")
    for m in members:
        console.print(f"  member {m}")


def evaluate(
    models: list[Path] = typer.Argument(..., help="exports (version dirs or base paths); an ensemble lists its members"),
    data: Optional[Path] = typer.Option(None, "--data", help="a job spec YAML: its data section gives the test split"),
    npz: Optional[Path] = typer.Option(None, "--npz", help="or an .npz with x_test/y_test (or x/y)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the rows as JSON here ('-' for stdout)"),
) -> None:
    """Test accuracy and loss of each member and of the ensemble, side by side."""
    if bool(data) == bool(npz):
        fail("give --data SPEC or --npz FILE", exit_codes.BAD_SPEC)
    if json_out and str(json_out) != "-":
        check_output_file(json_out, "--json")
    from serving.evaluate import evaluate_models, load_test_split

    if data:
        x, y, _ = load_test_split(data)  # DataUnavailable is a DataUnavailableError: cli.main maps it to exit 3
    else:
        x, y = _read_npz(npz)
        if y is None:
            fail(f"--npz {npz}: no labels (y_test, y or labels) to evaluate against", exit_codes.BAD_SPEC)
    rows = evaluate_models(models, x, y)
    from rich.table import Table

    table = Table(title=f"test set: {len(y)} images")
    for col in ("model", "kind", "accuracy", "loss"):
        table.add_column(col, justify="right" if col in ("accuracy", "loss") else "left")
    for r in rows:
        table.add_row(r.name, r.kind, f"{r.accuracy:.4f}", f"{r.loss:.4f}")
    payload = json.dumps([r.as_dict() for r in rows], indent=2)
    if json_out and str(json_out) == "-":
        print(payload)
        return
    console.print(table)
    if json_out:
        from jobs.fsutil import atomic_write_text

        atomic_write_text(json_out, payload + "\n")


def serve(
    base_path: Optional[Path] = typer.Argument(None, help="model base path: <base>/<integer version>/saved_model.pb"),
    model_base_path: Optional[Path] = typer.Option(None, "--model-base-path", "--model_base_path",
                                                   help="the same as BASE_PATH, spelled as TF Serving's flag"),
    model_config_file: Optional[Path] = typer.Option(None, "--model-config-file", "--model_config_file",
                                                     help="TF Serving ModelServerConfig text proto (several models)"),
    model_config_poll: float = typer.Option(0.0, "--model-config-file-poll-wait-seconds", "--model_config_file_poll_wait_seconds",
                                            min=0, help="re-read --model-config-file this often (0: once, at start)"),
    port: int = typer.Option(8500, "--port", min=0, max=65535, help="gRPC port (TF Serving's default 8500; 0: any free)"),
    host: str = typer.Option("0.0.0.0", "--host"),
    model_name: Optional[str] = typer.Option(None, "--model-name", "--model_name", help="default: the base path's last component"),
    batching: bool = typer.Option(False, "--enable-batching/--no-batching", "--enable_batching", help="server-side batching"),
    batching_parameters_file: Optional[Path] = typer.Option(
        None, "--batching-parameters-file", "--batching_parameters_file",
        help="TF Serving BatchingParameters text proto (with --enable-batching); overrides the batching options"),
    max_batch_size: int = typer.Option(32, "--max-batch-size", min=1),
    batch_timeout_micros: int = typer.Option(1000, "--batch-timeout-micros", min=0),
    num_batch_threads: int = typer.Option(1, "--num-batch-threads", min=1),
    max_enqueued_batches: int = typer.Option(64, "--max-enqueued-batches", min=1),
    max_request_batch_size: int = typer.Option(4096, "--max-request-batch-size", min=1),
    max_message_mb: int = typer.Option(64, "--max-message-mb", min=1, help="gRPC message size limit (both ways)"),
    poll_seconds: float = typer.Option(1.0, "--poll-seconds", "--file_system_poll_wait_seconds", min=0.05,
                                       help="how often to look for new versions"),
    num_versions: int = typer.Option(1, "--num-versions", min=1, help="serve the latest N versions"),
    label: Optional[list[str]] = typer.Option(None, "--label", help="version label LABEL=VERSION (repeat)"),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", min=0, max=65535,
                                               help="Prometheus /metrics port (off by default)"),
    rest_api_port: int = typer.Option(8501, "--rest-api-port", "--rest_api_port", min=0, max=65535,
                                      help="TF Serving's REST API and /monitoring/prometheus/metrics (0: off)"),
    rest_api_max_body_mb: int = typer.Option(64, "--rest-api-max-body-mb", min=1,
                                             help="REST request bodies above this get HTTP 413"),
    monitoring_config_file: Optional[Path] = typer.Option(None, "--monitoring-config-file", "--monitoring_config_file",
                                                          help="TF Serving MonitoringConfig text proto (Prometheus path)"),
    grpc_socket_path: Optional[str] = typer.Option(None, "--grpc-socket-path", "--grpc_socket_path",
                                                   help="also serve gRPC on this Unix socket"),
    grpc_channel_arguments: str = typer.Option("", "--grpc-channel-arguments", "--grpc_channel_arguments",
                                               help="gRPC server arguments KEY=VALUE[,KEY=VALUE...], as TF Serving's"),
    method_name_check: bool = typer.Option(False, "--enable-signature-method-name-check",
                                           "--enable_signature_method_name_check",
                                           help="Classify/Regress only on signatures whose method_name says so"),
    grace: float = typer.Option(10.0, "--grace-seconds", help="SIGTERM: time in-flight requests get to finish"),
    workers: int = typer.Option(64, "--workers", min=1, help="gRPC worker threads"),
    intra_op_threads: int = typer.Option(0, "--intra-op-threads", min=0, help="TensorFlow intra-op threads (0: default)"),
    inter_op_threads: int = typer.Option(0, "--inter-op-threads", min=0, help="TensorFlow inter-op threads (0: default)"),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="PEM certificate chain: serve TLS"),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert"),
) -> None:
    """Serve BASE_PATH over TensorFlow Serving's gRPC and REST APIs (development server; production: Dockerfile.serve).

    TF Serving's flags are accepted in its own spelling too (--model_base_path, --model_config_file,
    --enable_batching, --batching_parameters_file, ...), so its command lines run unchanged."""
    if base_path is not None and model_base_path is not None and base_path != model_base_path:
        fail(f"give BASE_PATH or --model_base_path, not both (received {base_path} and {model_base_path})", exit_codes.BAD_SPEC)
    base_path = base_path or model_base_path
    if base_path is None and model_config_file is None:
        fail("give BASE_PATH (or --model_base_path) or --model_config_file", exit_codes.BAD_SPEC)
    if base_path is not None and not base_path.is_dir():
        fail(f"BASE_PATH {base_path} is not a directory; expected a model base path with integer version "
             "directories (e.g. artifacts/models/ensemble)", exit_codes.BAD_SPEC)
    if base_path is not None and (base_path / "saved_model.pb").is_file():
        fail(f"BASE_PATH {base_path} is a SavedModel version directory; expected the model base path that holds "
             f"the versions, as TF Serving's --model_base_path: {base_path.resolve().parent}", exit_codes.BAD_SPEC)
    if batching_parameters_file is not None and not batching:
        fail("--batching_parameters_file is set without --enable_batching; add --enable_batching (TF Serving refuses "
             "this combination too)", exit_codes.BAD_SPEC)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from serving.model_servers.config import (
        BatchingConfig,
        ServerConfig,
        parse_grpc_channel_arguments,
        read_batching_parameters,
        read_model_config,
        read_monitoring_config,
    )

    # The configuration files are read before TensorFlow is imported: a bad one fails in well under a second.
    extra = read_model_config(model_config_file) if model_config_file is not None else []
    if batching_parameters_file is not None:
        batching_cfg = read_batching_parameters(batching_parameters_file)
    else:
        batching_cfg = BatchingConfig(batching, max_batch_size, batch_timeout_micros, num_batch_threads, max_enqueued_batches)
    prometheus_path = read_monitoring_config(monitoring_config_file) if monitoring_config_file is not None else None
    channel_arguments = parse_grpc_channel_arguments(grpc_channel_arguments)
    from serving.model_servers.server import serve_forever

    cfg = ServerConfig(
        model_name=(model_name or base_path.resolve().name) if base_path is not None else "",
        base_path=base_path or Path(""),
        extra_models=extra,
        model_config_file=model_config_file,
        model_config_poll_seconds=model_config_poll,
        port=port,
        host=host,
        poll_seconds=poll_seconds,
        num_versions=num_versions,
        labels=_labels(label),
        batching=batching_cfg,
        max_message_bytes=max_message_mb * 1024 * 1024,
        max_request_batch_size=max_request_batch_size,
        max_workers=workers,
        metrics_port=metrics_port,
        rest_api_port=rest_api_port or None,
        rest_api_max_body_bytes=rest_api_max_body_mb * 1024 * 1024,
        prometheus_path=prometheus_path,
        grpc_socket_path=grpc_socket_path,
        grpc_channel_arguments=channel_arguments,
        signature_method_name_check=method_name_check,
        tls_cert=tls_cert,
        tls_key=tls_key,
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
    )
    raise typer.Exit(serve_forever(cfg, grace=grace))


def _read_npz(path: Path):
    """(images, labels or None) from an .npz (x_test/x/images and y_test/y/labels) or an .npy of images."""
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
    except OSError as exc:
        fail(f"--npz {path}: cannot read ({exc.strerror or exc})", exit_codes.BAD_SPEC)
    except ValueError:  # numpy's text suggests allow_pickle, which is not what a wrong file needs
        fail(f"--npz {path}: not a NumPy .npz or .npy file of arrays", exit_codes.BAD_SPEC)
    if isinstance(data, np.ndarray):  # an .npy: the images alone
        return data, None
    xk = next((k for k in ("x_test", "x", "images") if k in data.files), None)
    if xk is None:
        fail(f"--npz {path}: expected an array named x_test, x or images; found {data.files}", exit_codes.BAD_SPEC)
    yk = next((k for k in ("y_test", "y", "labels") if k in data.files), None)
    x, y = data[xk], (data[yk] if yk else None)
    if y is not None and len(y) != len(x):
        fail(f"--npz {path}: {xk} holds {len(x)} images but {yk} holds {len(y)} labels; expected one label per image",
             exit_codes.BAD_SPEC)
    return x, y


def predict(
    images: Optional[list[Path]] = typer.Argument(None, help="image files (resized to the model's input)"),
    target: str = typer.Option("localhost:8500", "--target", help="HOST:PORT of TF Serving or jobctl serve"),
    model: str = typer.Option(..., "--model", help="model name"),
    npz: Optional[Path] = typer.Option(None, "--npz", help="an .npz of raw-pixel images (x_test/x) and labels"),
    version: Optional[int] = typer.Option(None, "--version"),
    version_label: Optional[str] = typer.Option(None, "--version-label"),
    signature: str = typer.Option(SIGNATURE_NAME, "--signature"),
    top_k: int = typer.Option(3, "--top-k", min=1),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="images per Predict request"),
    timeout: float = typer.Option(10.0, "--timeout", help="deadline per request, retries included, seconds"),
    retries: int = typer.Option(3, "--retries", min=0, max=4, help="retries on UNAVAILABLE (gRPC allows 4)"),
    tls: bool = typer.Option(False, "--tls", help="TLS channel"),
    ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help="PEM roots for --tls (default: system roots)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    rest: Optional[str] = typer.Option(None, "--rest", flag_value="http://localhost:8501", is_flag=False,
                                       help="use the REST API at this URL (alone: http://localhost:8501) instead of gRPC"),
) -> None:
    """Classify images through TF Serving's Predict API (gRPC, or REST with --rest): top-k classes with names."""
    if bool(images) == bool(npz):
        fail("give IMAGE files or --npz FILE", exit_codes.BAD_SPEC)
    if version is not None and version_label:
        fail("give --version or --version-label, not both", exit_codes.BAD_SPEC)
    if rest is None and ":" not in target:  # gRPC would quietly use port 443
        fail(f"--target: expected HOST:PORT (TF Serving's gRPC port is 8500), received {target!r}", exit_codes.BAD_SPEC)
    import numpy as np

    from serving.client import load_images

    if rest is not None:
        if tls or ca_cert:
            fail("--tls/--ca-cert apply to gRPC; for REST over TLS give an https:// URL to --rest", exit_codes.BAD_SPEC)
        from serving.rest_client import RestClient

        client = RestClient(rest, model, version=version, version_label=version_label, signature=signature,
                            timeout=timeout, retries=retries, batch_size=batch_size)
        target = rest
    else:
        from serving.client import PredictClient

        client = PredictClient(target, model, version=version, version_label=version_label, signature=signature,
                               timeout=timeout, retries=retries, batch_size=batch_size, tls=tls, root_certificates=ca_cert)
    labels = None
    try:
        if npz:
            x, labels = _read_npz(npz)
            names = [f"{npz}[{i}]" for i in range(len(x))]
        else:
            spec = client.input_spec()
            pixel_max = client.jobctl_metadata().get("pixel_max")
            x = load_images(images, spec.shape, pixel_max=pixel_max, dtype=spec.dtype)
            names = [str(p) for p in images]
        results = client.top_k(x, k=top_k)
    finally:
        client.close()
    accuracy = None
    if labels is not None:
        accuracy = float(np.mean([r[0][0] == int(y) for r, y in zip(results, labels)]))
    if as_json:
        print(json.dumps({"predictions": [{"input": n, "top_k": [{"class_id": c, "class_name": cn, "probability": p}
                                                                  for c, cn, p in r]} for n, r in zip(names, results)],
                          **({"accuracy": accuracy} if accuracy is not None else {})}, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{model} @ {target}")
    table.add_column("input")
    for i in range(min(top_k, len(results[0]) if results else top_k)):
        table.add_column(f"#{i + 1}")
    shown = results if len(results) <= 50 else results[:50]
    for n, r in zip(names, shown):
        table.add_row(n, *[f"{cn} ({p:.3f})" for _c, cn, p in r])
    console.print(table)
    if len(results) > 50:
        console.print(f"... {len(results) - 50} more rows (use --json for all)")
    if accuracy is not None:
        console.print(f"accuracy on {len(results)} labelled images: [bold]{accuracy:.4f}[/]")


def register(app: typer.Typer) -> None:
    app.command("ensemble")(ensemble)
    app.command("evaluate")(evaluate)
    app.command("serve")(serve)
    app.command("predict")(predict)
