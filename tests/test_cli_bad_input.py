"""Bad input a user gives the CLI gets a clear `error:` naming the argument and what was expected, exit code 2,
before any work and without a traceback (found by walking through the README as a new user)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def run(args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "my-job.yaml"
    path.write_text("name: x\n")
    return path


@pytest.mark.parametrize("command, option, under_the_file", [
    (["render", "examples/digits-cnn.yaml"], "-o/--out", False),
    (["deploy", "artifacts/models/ensemble", "--dry-run"], "-o/--output-dir", False),
    (["ensemble", "{tmp}/some-export"], "-o/--output", False),
    (["render", "examples/digits-cnn.yaml"], "-o/--out", True),
], ids=["render", "deploy", "ensemble", "render-below-a-file"])
def test_an_output_directory_that_is_a_file_is_refused(a_file, tmp_path, command, option, under_the_file):
    out = a_file / "sub" if under_the_file else a_file
    r = run([c.format(tmp=tmp_path) for c in command] + ["-o", out])
    assert r.exit_code == 2, r.output
    assert f"error: {option} {out}:" in r.output and "is a file" in r.output
    assert a_file.read_text() == "name: x\n"  # untouched


def test_an_output_file_that_is_a_directory_is_refused(tmp_path):
    npz = tmp_path / "t.npz"
    np.savez(npz, x_test=np.zeros((2, 8, 8, 1), np.uint8), y_test=np.zeros(2, np.int64))
    r = run(["evaluate", tmp_path / "model", "--npz", npz, "--json", tmp_path])
    assert r.exit_code == 2 and f"--json {tmp_path}: is a directory; expected a file path" in r.output


def test_npz_files_that_are_not_what_predict_and_evaluate_expect(tmp_path, a_file):
    from cli.commands_serving import _read_npz

    x = np.zeros((3, 8, 8, 1), np.uint8)
    np.save(tmp_path / "images.npy", x)  # a plain .npy: the images alone
    got, labels = _read_npz(tmp_path / "images.npy")
    assert got.shape == x.shape and labels is None
    r = run(["evaluate", tmp_path / "model", "--npz", tmp_path / "images.npy"])
    assert r.exit_code == 2 and "no labels (y_test, y or labels)" in r.output

    np.savez(tmp_path / "bad.npz", x_test=x, y_test=np.zeros(5, np.int64))
    r = run(["predict", "--target", "localhost:1", "--model", "m", "--npz", tmp_path / "bad.npz"])
    assert r.exit_code == 2
    assert "x_test holds 3 images but y_test holds 5 labels; expected one label per image" in r.output

    r = run(["predict", "--target", "localhost:1", "--model", "m", "--npz", a_file])
    assert r.exit_code == 2 and f"--npz {a_file}: not a NumPy .npz or .npy file" in r.output
    assert "allow_pickle" not in r.output


def test_predict_target_without_a_port(tmp_path):
    r = run(["predict", "--target", "localhost", "--model", "m", "--npz", tmp_path / "x.npz"])
    assert r.exit_code == 2 and "--target: expected HOST:PORT" in r.output and "'localhost'" in r.output


@pytest.mark.parametrize("port", ["70000", "-5"])
def test_serve_refuses_an_out_of_range_port(tmp_path, port):
    r = run(["serve", tmp_path / "models" / "m", "--port", port])
    assert r.exit_code == 2 and "--port" in r.output


def test_serve_refuses_a_version_directory(tmp_path):
    base = tmp_path / "models" / "m"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"")
    r = run(["serve", base / "1"])
    assert r.exit_code == 2
    assert "is a SavedModel version directory; expected the model base path" in r.output and str(base) in r.output


def test_ensemble_sweep_that_is_not_a_sweep(tmp_path):
    r = run(["ensemble", "--sweep", tmp_path / "nope", "--top", "2", "-o", tmp_path / "ens"])
    assert r.exit_code == 2
    assert f"--sweep: {tmp_path / 'nope'}: not a sweep directory" in r.output and "sweep name" in r.output


def test_validate_a_directory_an_empty_file_and_a_sweep_spec(tmp_path):
    r = run(["validate", "examples"])
    assert r.exit_code == 2 and "'examples' is a directory; expected a YAML file" in r.output
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    r = run(["validate", empty])
    assert r.exit_code == 2 and "the spec is empty; expected a mapping of fields" in r.output
    r = run(["validate", "examples/sweeps/digits-grid.yaml"])
    assert r.exit_code == 2
    assert "this is a sweep spec (it has base, parameters, objective, algorithm), not a job spec" in r.output
    assert "jobctl sweep" in r.output


@pytest.mark.slow
def test_train_refuses_a_taken_export_version_before_training(tmp_path):
    taken = tmp_path / "models" / "digits-mlp" / "1"
    taken.mkdir(parents=True)
    r = run(["train", "examples/digits-mlp.yaml", "--artifacts-dir", tmp_path, "--set", "export.version=1"])
    assert r.exit_code == 2, r.output
    assert "export.version: version 1 already exists" in r.output
    assert not (tmp_path / "runs").exists()  # nothing trained, no failed run left behind


def test_every_file_the_readme_and_docs_commands_name_exists():
    """The tour's commands name example files; a renamed example must not leave a command that cannot work."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    docs = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    named = {(doc.name, m) for doc in docs for m in re.findall(r"\bexamples/[\w./-]+\.ya?ml\b", doc.read_text())}
    assert named  # the pattern still finds the tour's commands
    missing = sorted((doc, m) for doc, m in named if not (root / m).is_file())
    assert not missing, missing


@pytest.mark.parametrize("command", [["render", "examples/digits-cnn.yaml"],
                                     ["deploy", "artifacts/models/ensemble", "--dry-run"]], ids=["render", "deploy"])
def test_manifests_that_cannot_be_written(command):
    # /proc takes no new directories, whoever runs the test (root included).
    r = run(command + ["-o", "/proc/jobctl-test/out"])
    assert r.exit_code == 1 and "cannot write the manifests" in r.output and "Traceback" not in r.output, r.output


def test_a_base_path_without_a_model_name():
    r = run(["deploy", "s3://", "--dry-run"])
    assert r.exit_code == 2 and "BASE_PATH 's3://'" in r.output and "--model-name" in r.output


@pytest.mark.parametrize("flag", ["--rest-api-port", "--rest_api_port"])
def test_serve_takes_tf_servings_rest_port_flag_and_checks_its_range(tmp_path, flag):
    r = run(["serve", tmp_path / "models" / "m", flag, "70000"])
    assert r.exit_code == 2 and "--rest-api-port" in r.output and "65535" in r.output


def test_predict_rest_refuses_grpc_tls_options(tmp_path):
    r = run(["predict", "--rest", "http://localhost:1", "--tls", "--model", "m", "--npz", tmp_path / "x.npz"])
    assert r.exit_code == 2 and "give an https:// URL to --rest" in r.output
