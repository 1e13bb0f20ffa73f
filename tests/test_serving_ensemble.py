"""The ensemble SavedModel: equals the (weighted) mean of its members, refuses members that disagree, is written
atomically in TF Serving's layout; `jobctl ensemble` and `jobctl evaluate`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.support.serving import export_tiny_model, in_process, shared_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared():
    return shared_models()


def test_ensemble_equals_weighted_mean_of_members(shared):
    x = shared["data"][2]  # real test images
    members = [in_process(m, x)["probabilities"] for m in shared["members"]]
    out = in_process(shared["ensemble"], x)
    expected = (members[0] + members[1] + 2 * members[2]) / 4  # weights [1, 1, 2]
    assert np.abs(out["probabilities"] - expected).max() < 1e-6
    np.testing.assert_array_equal(out["class_ids"], expected.argmax(axis=1))
    assert out["class_ids"].dtype == np.int64
    # each member's own output is returned too, in member order
    for i, m in enumerate(members):
        assert np.abs(out["member_probabilities"][:, i, :] - m).max() < 1e-6
    # the weights matter: the equal-weight mean differs on these inputs
    assert np.abs(np.mean(members, axis=0) - out["probabilities"]).max() > 1e-4


def test_equal_weights_and_layout(shared, tmp_path):
    from serving.ensemble import build_ensemble

    base = tmp_path / "ens"
    v1 = build_ensemble(shared["members"][:2], base, include_member_probabilities=False)
    v2 = build_ensemble(shared["members"][:2], base, include_member_probabilities=False)
    assert (v1.name, v2.name) == ("1", "2")  # next integer version, TF Serving layout
    assert sorted(os.listdir(base)) == ["1", "2"]  # no temp directory left behind
    assert (v1 / "saved_model.pb").is_file() and (v1 / "assets" / "class_names.txt").read_text().split() == [str(i) for i in range(10)]
    meta = json.loads((v1 / "jobctl.json").read_text())
    assert meta["ensemble"] and [m["weight"] for m in meta["members"]] == [0.5, 0.5]
    assert meta["input_shape"] == [8, 8, 1] and meta["input_dtype"] == "uint8"
    x = shared["data"][2][:64]
    out = in_process(v1, x)
    assert "member_probabilities" not in out
    expected = np.mean([in_process(m, x)["probabilities"] for m in shared["members"][:2]], axis=0)
    assert np.abs(out["probabilities"] - expected).max() < 1e-6


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(input_shape=(4, 4, 1)), "input shape [4, 4, 1] differs from [8, 8, 1]"),
        (dict(num_classes=3), "3 classes, but member"),
        (dict(class_names=[str(9 - i) for i in range(10)]), "class names differ from member"),
        (dict(input_dtype="float32"), "input dtype float32 differs from uint8"),
    ],
)
def test_mismatched_member_is_named(shared, tmp_path, kwargs, needle):
    from serving.ensemble import EnsembleError, build_ensemble

    odd = export_tiny_model(tmp_path / "odd", epochs=0, **kwargs)
    with pytest.raises(EnsembleError) as info:
        build_ensemble([shared["members"][0], odd], tmp_path / "out")
    assert needle in str(info.value) and str(odd) in str(info.value)
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_bad_weights_rejected(shared, tmp_path):
    from serving.ensemble import EnsembleError, build_ensemble

    with pytest.raises(EnsembleError, match=r"expected 3 weights \(one per member\), received 2"):
        build_ensemble(shared["members"], tmp_path / "e", weights=[1, 2])
    with pytest.raises(EnsembleError, match="non-negative"):
        build_ensemble(shared["members"], tmp_path / "e", weights=[1, -1, 1])


def test_resolve_members_from_sweep_leaderboard(shared, tmp_path):
    from serving.ensemble import EnsembleError, resolve_members

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    entries = [{"trial": i, "val_accuracy": 0.9 - i / 10, "export_path": str(m.parent)} for i, m in enumerate(shared["members"])]
    entries.insert(1, {"trial": 9, "val_accuracy": 0.85, "status": "failed"})  # no export: skipped
    (sweep / "leaderboard.json").write_text(json.dumps(entries))
    assert resolve_members(sweep, top=2) == shared["members"][:2]  # base paths resolve to their latest version
    assert resolve_members(str(sweep)) == shared["members"]
    with pytest.raises(EnsembleError, match="has only 3 exported trials"):
        resolve_members(sweep, top=5)
    with pytest.raises(EnsembleError, match="no such directory"):
        resolve_members([tmp_path / "missing"])


def test_cli_ensemble_and_evaluate(shared, tmp_path):
    from cli.main import app

    runner = CliRunner()
    npz = tmp_path / "test.npz"
    np.savez(npz, x_test=shared["data"][2], y_test=shared["data"][3])
    out = tmp_path / "models" / "ens"
    args = ["ensemble", *map(str, shared["members"]), "-o", str(out), "--weights", "1,1", "--weights", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (out / "1" / "saved_model.pb").is_file()

    r = runner.invoke(app, ["evaluate", str(out), "--npz", str(npz), "--json", "-"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["kind"] for row in rows] == ["member", "member", "member", "ensemble"]
    from serving.evaluate import scores

    x, y = shared["data"][2], shared["data"][3]
    for row, path in zip(rows, shared["members"]):
        acc, loss = scores(in_process(path, x)["probabilities"], y)
        assert row["accuracy"] == pytest.approx(acc) and row["loss"] == pytest.approx(loss, rel=1e-5)
    assert rows[-1]["examples"] == len(y)

    # bad arguments: exit code 2 with the reason
    assert [m["weight"] for m in json.loads((out / "1" / "jobctl.json").read_text())["members"]] == [0.25, 0.25, 0.5]
    r = runner.invoke(app, ["ensemble", *map(str, shared["members"]), "-o", str(out), "--weights", "1,x"])
    assert r.exit_code == 2 and "--weights: expected numbers" in r.output
    r = runner.invoke(app, ["ensemble", "-o", str(out)])
    assert r.exit_code == 2 and "give member EXPORT paths or --sweep" in r.output
    r = runner.invoke(app, ["ensemble", str(shared["members"][0]), str(tmp_path / "nope"), "-o", str(out)])
    assert r.exit_code == 2 and "nope" in r.output


def test_cli_evaluate_with_a_job_spec(shared, tmp_path):
    """--data SPEC: the test split the spec's data section describes (the same loader and split as training)."""
    from cli.main import app
    from jobs.datasets import load_dataset
    from jobs.spec import load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: digits-eval\ndata:\n  dataset: digits\n")
    data = load_dataset(load_spec(spec).data)
    r = CliRunner().invoke(app, ["evaluate", *map(str, shared["members"][:2]), "--data", str(spec), "--json", "-"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["kind"] for row in rows] == ["model", "model", "mean"]
    assert all(row["examples"] == len(data.y_test) for row in rows)
    r = CliRunner().invoke(app, ["evaluate", str(shared["members"][0]), "--data", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 2


def test_cli_evaluate_with_images_of_another_shape_or_missing_data(shared, tmp_path):
    """A test set the model was not trained for is a clear error (exit 2), not a TensorFlow traceback; a spec
    whose dataset files are missing exits 3, as `jobctl train` does."""
    from cli.main import app

    npz = tmp_path / "wrong.npz"
    np.savez(npz, x_test=np.zeros((3, 28, 28), np.uint8), y_test=np.zeros(3, np.int64))
    r = CliRunner().invoke(app, ["evaluate", str(shared["members"][0]), "--npz", str(npz)])
    assert r.exit_code == 2, r.output
    assert "input 'images': expected shape [?,8,8,1], received [3,28,28]" in r.output
    assert "Traceback" not in r.output and "TypeError" not in r.output

    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: fm\ndata:\n  dataset: fashion_mnist\n  path: {tmp_path / 'no-such-cache'}\n")
    r = CliRunner().invoke(app, ["evaluate", str(shared["members"][0]), "--data", str(spec)])
    assert r.exit_code == 3, r.output
    assert "error: data.path:" in r.output and "is not a folder" in r.output
