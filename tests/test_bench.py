"""Benchmarks are not tests, but their smoke modes run here so they cannot rot: each `--quick` run must finish and
write the JSON the report is built from; the report must be built from it and say what is missing or failed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import run_all
from bench.bench_accuracy import SEED_RECIPES
from bench.common import Stat, paired_ratio, run_process, write_json


# ------------------------------------------------------------------------------------------------ common
def test_stat_median_and_spread_and_paired_ratio():
    s = Stat.of([3.0, 1.0, 2.0, 10.0, 2.5])
    assert (s.median, s.min, s.max, s.n) == (2.5, 1.0, 10.0, 5)
    r = paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0])
    assert r.samples == [2.0, 4.0, 3.0] and r.median == 3.0
    with pytest.raises(ValueError, match="equal length"):
        paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least one sample"):
        Stat.of([])


def test_run_process_reports_the_childs_own_peak_memory_and_exit_code():
    small = run_process([sys.executable, "-c", "pass"])
    big = run_process([sys.executable, "-c", "x = bytearray(150_000_000); x[::4096] = b'1' * len(x[::4096])"])
    failed = run_process([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert small.returncode == 0 and failed.returncode == 3
    # The benchmark process' own memory must not leak into a small child's figure.
    assert small.peak_rss_mb < 60 < 140 < big.peak_rss_mb


# --------------------------------------------------------------------------------------------- run_all
def _synthetic_results() -> dict:
    five = lambda m: {"median": m, "min": m * 0.8, "max": m * 1.3, "n": 5, "samples": [m] * 5}  # noqa: E731
    recipe = {
        "recipe": "dogs-image-folder", "data": "synthetic", "images": 8192, "batch_size": 32,
        "baseline": "tf-keras ImageDataGenerator.flow", "pipeline_speedup": five(3.4), "epoch_speedup": five(1.1),
        "pipeline_images_per_second": {"seed": five(2000), "jobctl": five(6800)},
        "epoch_images_per_second": {"seed": five(900), "jobctl": five(990)},
    }
    runs = [
        {"recipe": "digits-cnn", "model_type": "cnn", "cnn": True, "adapted": [], "best_val_accuracy": 0.99,
         "test_accuracy": 0.9889, "test_correct": 355, "num_test": 359, "num_train": 1150, "num_val": 288,
         "epochs_run": 20, "best_epoch": 14, "wall_seconds": 30.0},
        {"recipe": "cifar10-cnn-lr1e-4", "model_type": "cnn", "cnn": True, "adapted": ["data"], "best_val_accuracy": 0.94,
         "test_accuracy": 0.9387, "test_correct": 337, "num_test": 359, "num_train": 1150, "num_val": 288,
         "epochs_run": 40, "best_epoch": 40, "wall_seconds": 50.0},
    ]
    accuracy = {
        "digits": runs, "repetitions_note": "one run each", "adaptations": {"model.padding": "same"},
        "summary": {"best_recipe": "digits-cnn", "best_test_accuracy": 0.9889, "worst_cnn_recipe": "cifar10-cnn-lr1e-4",
                    "worst_cnn_test_accuracy": 0.9387, "every_cnn_meets_0_95": False, "best_meets_0_985": True},
        "ensemble": {"members": [{"recipe": "digits-cnn", "best_val_accuracy": 0.99, "test_accuracy": 0.9889,
                                  "test_correct": 355}],
                     "selection": "top 3", "num_test": 359, "one_image_points": 0.279, "ensemble_accuracy": 0.9916,
                     "ensemble_correct": 356, "member_mean_accuracy": 0.98, "member_best_accuracy": 0.9889,
                     "vs_mean_images": 4.2, "vs_best_images": 1, "above_mean": True,
                     "over_seeds": {"replicates": [
                         {"seed": "as written", "vs_mean_images": 4.2, "vs_best_images": 1, "ensemble_correct": 356,
                          "members_correct": [355, 352, 349]},
                         {"seed": 1, "vs_mean_images": -1.0, "vs_best_images": -2, "ensemble_correct": 350,
                          "members_correct": [352, 351, 350]},
                         {"seed": 2, "error": "digits-cnn+ens-seed2: RuntimeError: boom"}],
                         "replicates_done": 2, "decisions": 718, "vs_mean_images_total": 3.2, "vs_best_images_total": -1,
                         "above_mean": True}},
    }
    return {
        "machine": {"cpu": "Test CPU", "cores": 2}, "started_utc": "t0", "finished_utc": "t1", "total_seconds": 60,
        "benchmarks": {
            "pipeline": {"status": "ok", "seconds": 1, "command": "python -m bench.bench_pipeline",
                         "data": {"recipes": [recipe]}},
            "accuracy": {"status": "ok", "seconds": 1, "command": "python -m bench.bench_accuracy", "data": accuracy},
            "distribute": {"status": "missing", "detail": "bench/bench_distribute.py does not exist"},
            "serving": {"status": "failed", "seconds": 3, "detail": "exit 1: RuntimeError: boom"},
            "sweep": {"status": "ok", "seconds": 2, "data": {"speedup": 1.69, "parallel": {"parallelism": 2}}},
        },
    }


def test_report_quotes_ratios_with_spread_targets_and_what_did_not_run(tmp_path):
    results = _synthetic_results()
    results["figures"] = run_all.make_figures(results, tmp_path / "figures")
    assert set(results["figures"]) >= {"pipeline.png", "accuracy.png"}
    assert all((tmp_path / "figures" / f).stat().st_size > 1000 for f in results["figures"])
    text = run_all.render_report(results, "figures")
    assert "3.40x (2.72–4.42, n=5)" in text  # median and min–max spread of the repetitions
    assert "| Whole-epoch speed-up, dogs-image-folder vs tf-keras ImageDataGenerator.flow | 1.10x" in text
    summary = text.split("## Summary")[1].split("## 1.")[0]
    assert "| ≥ 1.2x | **no** |" in summary and "| ≥ 3x | yes |" in summary
    assert "lowest 0.9387 (cifar10-cnn-lr1e-4) | ≥ 0.95 | **no** |" in summary
    # The ensemble target is judged on every training-seed replicate together, the first run quoted beside it.
    assert "+3.2 images over 2 of 3 training seeds (1 failed) (718 test decisions); first run 0.9916 vs 0.9800 (+4.2 of 359) | above the mean | yes |" in summary
    assert "| 1 | 352/359, 351/359, 350/359 | 351.0/359 | 350/359 | -1 vs mean, -2 vs best |" in text
    assert "| 2 | failed |  |  | digits-cnn+ens-seed2: RuntimeError: boom |" in text  # a failed replicate is a row
    assert "one image is 0.28 points" in text
    assert "Not measured: missing — bench/bench_distribute.py does not exist" in text
    assert "Not measured: failed — exit 1: RuntimeError: boom" in text
    assert "Local sweep speed-up, parallelism 2 vs one trial at a time | 1.69x" in text
    assert "![pipeline.png](figures/pipeline.png)" in text


def test_run_benchmark_reports_missing_and_silent_modules(tmp_path):
    missing = run_all.Benchmark("nope", "bench.bench_does_not_exist", "x", "y")
    assert run_all.run_benchmark(missing, True, tmp_path, tmp_path / "logs")["status"] == "missing"
    # A module that exits 0 without writing its JSON is a failure, not an empty success.
    silent = run_all.Benchmark("silent", "bench.common", "x", "y")
    entry = run_all.run_benchmark(silent, True, tmp_path, tmp_path / "logs")
    assert entry["status"] == "failed" and "no JSON" in entry["detail"]
    assert (tmp_path / "logs" / "silent.log").is_file()


def test_report_only_rerenders_from_results_json(tmp_path):
    results_path = write_json(tmp_path / "results.json", _synthetic_results())
    code = run_all.main(["--report-only", "--results", str(results_path), "--report", str(tmp_path / "B.md"),
                         "--figures", str(tmp_path / "fig")])
    assert code == 1  # the serving entry failed: `make bench` must not look green
    assert "## Summary" in (tmp_path / "B.md").read_text()
    assert "pipeline.png" in json.loads(results_path.read_text())["figures"]


# -------------------------------------------------------------------------------- each benchmark, --quick
@pytest.mark.slow
def test_bench_pipeline_quick(tmp_path):
    from bench import bench_pipeline

    out = tmp_path / "pipeline.json"
    result = bench_pipeline.main(["--quick", "--recipes", "dogs-image-folder", "cifar10-cnn", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [r["recipe"] for r in saved["recipes"]] == ["dogs-image-folder", "cifar10-cnn"]
    dogs, cifar = saved["recipes"]
    assert dogs["baseline"] == "tf-keras ImageDataGenerator.flow" and cifar["baseline"] == "numpy arrays into fit"
    for r in saved["recipes"]:
        assert r["pipeline_speedup"]["median"] > 0 and r["epoch_speedup"]["median"] > 0
    assert {"batch_size", "prefetch", "steps_per_execution"} <= set(saved["defaults"])  # XLA: full runs only
    for r in saved["recipes"]:  # jobctl's side compiles as jobs/training/loop.py does: a divisor of its steps per epoch
        assert -(-r["images"] // r["batch_size"]) % r["jobctl_steps_per_execution"] == 0
    assert dogs["candidate"]["pipeline_speedup"]["median"] > 0 and cifar["candidate"] is None
    assert saved["machine"]["cores"] >= 1 and result["quick"] is True


def test_candidate_augmentation_identity_without_ranges_and_exact_flips():
    """The composed-transform candidate must not distort images by itself (its speed figure would mean nothing)."""
    import numpy as np

    from bench.bench_pipeline import composed_affine_dataset, load_recipe

    spec = load_recipe("dogs-image-folder")
    spec.augmentation.flip, spec.augmentation.rotation, spec.augmentation.zoom = "none", 0.0, 0.0
    x = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    y = np.arange(8) % 3
    images, labels = next(iter(composed_affine_dataset(spec, x, y, 3, 8)))
    order = np.argmax(labels.numpy(), axis=1)
    got = {tuple(img.astype(np.uint8).ravel()[:64]) for img in np.rint(images.numpy())}
    assert got == {tuple(img.ravel()[:64]) for img in x} and set(order) <= {0, 1, 2}
    # Flip only: every output is its input or the input mirrored left-right, and both occur.
    spec.augmentation.flip = "horizontal"
    x = np.random.default_rng(1).integers(0, 256, size=(64, 8, 8, 1), dtype=np.uint8)
    y = np.arange(64)
    images, labels = next(iter(composed_affine_dataset(spec, x, y, 64, 64)))
    kinds = set()
    for img, label in zip(np.rint(images.numpy()).astype(np.uint8), np.argmax(labels.numpy(), axis=1)):
        same, mirrored = np.array_equal(img, x[label]), np.array_equal(img, x[label][:, ::-1])
        assert same or mirrored
        kinds.add("same" if same else "mirrored")
    assert kinds == {"same", "mirrored"}


@pytest.mark.slow
def test_bench_cli_quick_help_and_render_do_not_load_tensorflow(tmp_path):
    from bench import bench_cli

    out = tmp_path / "cli.json"
    bench_cli.main(["--quick", "--no-memory", "--out", str(out)])
    cmds = json.loads(out.read_text())["startup"]["commands"]
    assert {"python", "import_tensorflow", "help", "render", "status"} <= set(cmds)
    tf_mb = cmds["import_tensorflow"]["peak_rss_mb"]["median"]
    for name in ("help", "render", "status"):
        # TensorFlow alone is ~600 MB resident: a CLI command far below it has not imported it.
        assert cmds[name]["peak_rss_mb"]["median"] < tf_mb / 3, name
        assert cmds[name]["speedup_vs_import_tensorflow"]["median"] > 0


@pytest.mark.slow
def test_bench_accuracy_quick_trains_scores_and_ensembles(tmp_path):
    from bench import bench_accuracy

    out = tmp_path / "accuracy.json"
    bench_accuracy.main(["--quick", "--out", str(out)])
    saved = json.loads(out.read_text())
    runs = saved["digits"]
    assert [r["recipe"] for r in runs] == ["digits-cnn", "digits-mlp"] and all("error" not in r for r in runs)
    assert all(r["num_test"] == runs[0]["num_test"] > 300 for r in runs)  # one shared digits test split
    ens = saved["ensemble"]
    assert len(ens["members"]) == 2 and ens["num_test"] == runs[0]["num_test"]
    assert ens["vs_mean_images"] == pytest.approx((ens["ensemble_accuracy"] - ens["member_mean_accuracy"]) * ens["num_test"], abs=0.2)
    # Quick mode retrains the members once more (seed 1) and ensembles them again; totals add up the replicates.
    reps = ens["over_seeds"]
    assert [r["seed"] for r in reps["replicates"]] == ["as written", 1] and all("error" not in r for r in reps["replicates"])
    assert reps["decisions"] == 2 * ens["num_test"] and reps["replicates_done"] == 2
    assert reps["vs_mean_images_total"] == pytest.approx(sum(r["vs_mean_images"] for r in reps["replicates"]), abs=0.11)
    assert len(reps["replicates"][1]["members_correct"]) == 2
    assert {o["status"] for o in saved["other_datasets"]} <= {"not cached", "cached; skipped in quick mode"}


@pytest.mark.parametrize("name", SEED_RECIPES)
def test_seed_recipes_fit_digits_after_the_documented_adaptations(name):
    """Every seed recipe the accuracy table runs on digits must build an 8x8 model (no training: fast)."""
    import yaml

    from bench.bench_accuracy import recipe_overrides
    from jobs.models import build_model
    from jobs.spec import load_spec

    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "examples" / f"{name}.yaml").read_text())
    spec = load_spec(root / "examples" / f"{name}.yaml", recipe_overrides(name, raw))
    assert spec.data.dataset == "digits" and spec.augmentation.flip == "none"
    model = build_model(spec.model, spec.preprocessing, (8, 8, 1), 10, 16.0)
    assert model.output_shape == (None, 10)


def test_accuracy_seed_spread_and_ensemble_candidates(tmp_path, monkeypatch):
    """Extra-seed runs measure how many images a seed moves; they are not ensemble candidates (no training here)."""
    from bench import bench_accuracy as ba

    def fake_train(name, overrides, artifacts, quick, dataset, label=None, note=None):
        seed = overrides.get("seed", 42)
        correct = {42: 356, 1: 353, 2: 355}.get(seed, 350)
        return {"recipe": label or name, "cnn": True, "seed": seed, "test_accuracy": correct / 359,
                "test_correct": correct, "num_test": 359, "best_val_accuracy": correct / 360,
                "export_path": f"/x/{label or name}"}

    seen = {}
    monkeypatch.setattr(ba, "train_one", fake_train)
    monkeypatch.setattr(ba, "ensemble_of_best", lambda runs, k, artifacts: seen.setdefault("runs", runs) and {})
    monkeypatch.setattr(ba, "DIGITS_RECIPES", ["digits-cnn", "digits-mlp"])
    monkeypatch.setattr(ba, "SEED_RECIPES", [])
    monkeypatch.setattr(ba, "VARIANTS", [])
    ba.main(["--out", str(tmp_path / "a.json"), "--no-native"])
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["seed_spread"] == {"recipe": "digits-cnn", "seeds": [42, 1, 2], "test_correct": [356, 353, 355],
                                    "num_test": 359, "range_images": 3,
                                    "test_accuracy": [356 / 359, 353 / 359, 355 / 359]}
    assert [r["recipe"] for r in seen["runs"]] == ["digits-cnn", "digits-mlp"]
    assert "got 353–356 of 359 test images right" in ba.seed_scale(saved)


# ------------------------------------------------------------------------------------------------- bench_data
def test_bench_data_report_judges_the_issue_targets_and_says_where_the_cores_go():
    from bench import bench_data

    def stat(median, n=5):
        return {"median": median, "min": median * 0.9, "max": median * 1.1, "n": n, "samples": [median] * n}

    sizes = {str(s): {"stored": 256 if s == 224 else s, "pack_seconds": 3.0, "packed_images": 600, "images": 2048,
                      "ffd_images": 256,
                      "images_per_second": {"jobctl_packed": stat(2000.0), "jobctl_folder": stat(500.0),
                                            "jobctl_packed_device_aug": stat(4790.0),
                                            "jobctl_packed_flip_shift": stat(300.0),
                                            "jobctl_packed_deterministic": stat(1800.0),
                                            "keras_image_dataset_from_directory": stat(1000.0),
                                            "tf_keras_flow_from_directory": stat(100.0)},
                      "vs": {"keras_image_dataset_from_directory": stat(2.0), "tf_keras_flow_from_directory": stat(20.0),
                             "jobctl_folder": stat(4.0)}} for s in (32, 224)}
    recipes = {f"{shape}_{p}": stat(rate) for shape in ("8x8x1", "28x28x1", "32x32x3")
               for p, rate in (("host", 10_000.0), ("device", 100_000.0))}
    data = {"memory": {"images_1x": 800, "size": 224, "shuffle_buffer": 256, "in-memory_1x_mb": 1000,
                       "in-memory_4x_mb": 2000, "in-memory_growth": 1.0, "streaming_1x_mb": 800,
                       "streaming_4x_mb": 840, "streaming_growth": 0.05},
            "throughput": {"cores_used": 1, "sizes": sizes, "recipes": recipes}, "photos": 600}
    heads = {h.question: h for h in bench_data.headlines(data)}
    assert [h.met for h in heads.values()] == [True, True, False]  # +5% <= 10%; 2000 >= 1500; 2.0x < 2.5x
    text = bench_data.report_section(data, lambda name: "")
    assert "| streaming | 800 MB | 840 MB | +5% |" in text
    # cifar10-cnn: 134,185 images/s on one H200 over 10,000 per core = 13.4 cores with host augmentation
    assert "| `cifar10-cnn` | 32x32x3 | 134,185 | 10,000 | 13.4 | 100,000 | 1.3 |" in text
    # Packing 600 images in 3 s saves 1/500 - 1/2000 s an image an epoch: it pays after 3.3 epochs.
    assert "it pays for itself after 3.3 epochs" in text
    assert "| ResNet-50 (packed JPEG shards, stored 256x256, flip + random 224 crop) | 224x224x3 | 4,790 | 2,000 | 2.4 | 4,790 | 1.0 |" in text
    assert "| jobctl, packed shards, flip + 10% shift (one projective resample per image) | 300 (270–330, n=5) | — |" in text
    # a run from before augmentation.crop_from measured flip + shift, and is labelled so
    for size in sizes.values():
        del size["images_per_second"]["jobctl_packed_flip_shift"]
    assert "| ResNet-50 (packed JPEG shards, stored 256x256, flip + shift) |" in bench_data.report_section(data, lambda n: "")
    assert any(b.name == "data" and b.module == "bench.bench_data" for b in run_all.discover())
