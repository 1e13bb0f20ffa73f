"""The serving half of `make demo`: ensemble the trained models, serve the ensemble over gRPC on a free local
port, predict the whole test set through TF Serving's Predict API, and print each member's accuracy beside the
ensemble's.

Every figure comes from the one gRPC answer: the ensemble returns `member_probabilities` next to its averaged
`probabilities`, so members and ensemble are scored on exactly the same images and the same call.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

log = logging.getLogger("jobctl.demo")


def run_serving_demo(
    export_paths: Sequence[Union[str, Path]],
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    output_base: Optional[Union[str, Path]] = None,
    model_name: str = "ensemble",
    weights: Optional[Sequence[float]] = None,
    batching: bool = True,
    console=None,
) -> dict:
    """Returns {"ensemble_path", "target", "members": [{"name", "accuracy", "loss"}], "ensemble": {...},
    "requests", "seconds"}; prints a table on `console` (a rich Console) or stdout.

    `output_base` defaults to `<models dir>/<model_name>` beside the first member (artifacts/models/ensemble).
    """
    from serving.client import PredictClient
    from serving.ensemble import build_ensemble, inspect_member
    from serving.evaluate import _name, scores
    from serving.model_servers.config import BatchingConfig, ServerConfig
    from serving.model_servers.server import ModelServer

    if len(export_paths) < 1:
        raise ValueError("run_serving_demo: expected at least one export path, received none")
    members = [inspect_member(p) for p in export_paths]
    if output_base is None:
        first = members[0].path  # <models>/<name>/<version>
        output_base = first.parent.parent / model_name
    output_base = Path(output_base)
    ensemble_dir = build_ensemble([m.path for m in members], output_base, weights=weights, model_name=model_name)

    cfg = ServerConfig(model_name=output_base.name, base_path=output_base, port=0, host="127.0.0.1",
                       batching=BatchingConfig(enabled=batching), poll_seconds=3600)
    server = ModelServer(cfg).start()
    target = f"127.0.0.1:{server.port}"
    t0 = time.perf_counter()
    try:
        with PredictClient(target, output_base.name, version=int(ensemble_dir.name), batch_size=128, timeout=60) as client:
            out = client.predict(np.asarray(x_test))
            requests = -(-len(x_test) // client.batch_size)
    finally:
        server.stop(grace=2)
    seconds = time.perf_counter() - t0

    y = np.asarray(y_test)
    rows = []
    for i, m in enumerate(members):
        acc, loss = scores(out["member_probabilities"][:, i, :], y)
        rows.append({"name": _name(m.path, m.metadata), "path": str(m.path), "accuracy": acc, "loss": loss})
    acc, loss = scores(out["probabilities"], y)
    ens = {"name": f"{output_base.name}/{ensemble_dir.name}", "path": str(ensemble_dir), "accuracy": acc, "loss": loss}
    result = {"ensemble_path": str(ensemble_dir), "target": target, "members": rows, "ensemble": ens,
              "requests": requests, "examples": int(len(y)), "seconds": seconds}
    _print(result, console)
    return result


def _print(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Test set over gRPC: members and their ensemble",
                  caption=f"{result['examples']} images, {result['requests']} Predict calls, {result['seconds']:.2f}s")
    table.add_column("model")
    table.add_column("accuracy", justify="right")
    table.add_column("loss", justify="right")
    best_member = max(r["accuracy"] for r in result["members"])
    for r in result["members"]:
        table.add_row(r["name"], f"{r['accuracy']:.4f}", f"{r['loss']:.4f}")
    e = result["ensemble"]
    delta = e["accuracy"] - best_member
    table.add_row(f"[bold]ensemble[/] {e['name']}", f"[bold]{e['accuracy']:.4f}[/]", f"{e['loss']:.4f}")
    (console or Console()).print(table)
    (console or Console()).print(f"ensemble vs best member: {delta:+.4f} accuracy; served from {e['path']}")

