"""`make demo`: the main job on the offline default dataset, end to end.

1. Trains the seeds' CNN on scikit-learn's digits, keeps the best checkpoint, exports it for TF Serving.
2. Trains two more recipes (seed 002's batch-norm CNN, seed 003's MLP) the same way.
3. Fuses the three exports into one averaging SavedModel, serves it on a local TF-Serving-compatible gRPC server,
   predicts the test set over gRPC and prints each member's accuracy beside the ensemble's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jobs import contract, exit_codes

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("digits-cnn.yaml", "digits-bn-cnn.yaml", "digits-mlp.yaml")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts-dir", default="artifacts")
    parser.add_argument("--no-serving", action="store_true", help="train and export only")
    args = parser.parse_args(argv)

    from jobs.spec import SpecError, load_spec
    from jobs.training.loop import run

    started = time.perf_counter()
    results = []
    for recipe in RECIPES:
        try:
            spec = load_spec(ROOT / "examples" / recipe)
        except SpecError as exc:
            print(exc.render(), file=sys.stderr)
            return exit_codes.BAD_SPEC
        print(f"\n=== training {spec.name} ({spec.model.type} on {spec.data.dataset}) ===", flush=True)
        results.append((spec, run(spec, artifacts_dir=args.artifacts_dir)))

    print("\n=== artifacts ===")
    for spec, result in results:
        m = result.metrics
        print(f"{spec.name:<16} test accuracy {m['test_accuracy']:.4f} (best epoch {m['best_epoch']}/{m['epochs_run']})")
        print(f"  run dir:     {result.run_dir}  (metrics.json, history.csv, accuracy.png, loss.png, tensorboard/)")
        print(f"  checkpoint:  {result.run_dir / contract.BEST_WEIGHTS_FILE}")
        print(f"  export:      {result.export_path}")
    print(f"  TensorBoard: tensorboard --logdir {contract.runs_root(args.artifacts_dir)}")

    if not args.no_serving:
        from jobs.datasets import load_dataset
        from demo.serving import run_serving_demo

        spec = results[0][0]
        data = load_dataset(spec.data)  # all three recipes share the digits test split (data.split_seed)
        print("\n=== ensemble served over gRPC ===", flush=True)
        run_serving_demo([r.export_path for _, r in results], data.x_test, data.y_test)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f}s")
    return exit_codes.OK
