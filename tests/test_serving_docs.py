"""The curl walkthrough of the REST API in docs/serving.md, run exactly as written (the port aside) against a live
`jobctl serve` process: every command succeeds and answers what the page shows under it.

The page's answers use numbers and "..." where the model decides: a number matches any number, "..." as the last
item of a list matches any further items, a "...": "..." member allows any further members; everything else
(keys, states, texts, HTTP codes) must be equal."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.common import free_ports
from tests.support.serving import copy_version, shared_models

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "serving.md"


def walkthrough() -> list[tuple[str, str]]:
    """(command, expected answer) pairs from the bash block after the `rest-walkthrough` marker."""
    text = DOC.read_text().split("<!-- rest-walkthrough -->", 1)[1]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    pairs, command, answer = [], None, []
    for line in block.splitlines():
        if line.startswith("curl "):
            if command:
                pairs.append((command, "\n".join(answer)))
            command, answer = line, []
        elif line.startswith("# ") and command:
            answer.append(line[2:])
        elif not line.strip() and command and answer:
            pairs.append((command, "\n".join(answer)))
            command, answer = None, []
    if command:
        pairs.append((command, "\n".join(answer)))
    return pairs


def matches(want, got) -> bool:
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return False
        keys = {k for k in want if k != "..."}
        if "..." not in want and set(got) != keys or not keys <= set(got):
            return False
        return all(matches(want[k], got[k]) for k in keys)
    if isinstance(want, list):
        if not isinstance(got, list):
            return False
        if want and want[-1] == "...":
            return len(got) >= len(want) - 1 and all(matches(w, g) for w, g in zip(want[:-1], got))
        return len(want) == len(got) and all(matches(w, g) for w, g in zip(want, got))
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        return isinstance(got, (int, float)) and not isinstance(got, bool)
    return want == got


def _split_code(text: str) -> tuple[str, str]:
    m = re.fullmatch(r"(.*) (\d{3})", text.strip(), re.S)
    return (m.group(1), m.group(2)) if m else (text.strip(), "")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    shared = shared_models()
    base = tmp_path_factory.mktemp("docs") / "digits"
    copy_version(shared["ensemble"], base, 1)
    grpc_port, rest_port = free_ports(2)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", str(base), "--port", str(grpc_port), "--host", "127.0.0.1",
                             "--rest-api-port", str(rest_port), "--label", "stable=1", "--grace-seconds", "1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v1/models/digits", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"jobctl serve did not come up: {proc.stdout.read()[-3000:]}")
            time.sleep(0.3)
    yield rest_port
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_the_matcher_is_strict_where_the_page_is():
    assert matches({"a": [1.0, "..."], "b": "AVAILABLE"}, {"a": [0.3, 0.2], "b": "AVAILABLE"})
    assert not matches({"b": "AVAILABLE"}, {"b": "LOADING"})
    assert not matches({"a": 1}, {"a": 1, "extra": 2}) and matches({"a": 1, "...": "..."}, {"a": 1, "extra": 2})
    assert not matches([1, 2], [1]) and not matches({"a": 1}, {"a": "1"})


def test_the_walkthrough_has_every_endpoint():
    commands = " ".join(f"{c} {a}" for c, a in walkthrough())
    for piece in ("/v1/models/digits ", "/metadata", ":predict", '"instances"', '"inputs"', ":classify", '"b64"',
                  "/versions/1", "/labels/stable", "/monitoring/prometheus/metrics", "404", "nope"):
        assert piece in commands or piece.strip() in commands, piece


@pytest.mark.parametrize("command, answer", walkthrough(), ids=lambda v: v[:60] if isinstance(v, str) else None)
def test_curl_walkthrough_answers_as_documented(live, command, answer):
    run = subprocess.run(["bash", "-c", command.replace("localhost:8501", f"127.0.0.1:{live}")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    want_body, want_code = _split_code(answer)
    got_body, got_code = _split_code(run.stdout) if want_code else (run.stdout.strip(), "")
    assert got_code == want_code
    try:
        want = json.loads(want_body)
    except json.JSONDecodeError:  # text (Prometheus): equal but for the numbers at the end of each line
        number = re.compile(r" [0-9.e+-]+$", re.M)
        assert number.sub(" N", got_body) == number.sub(" N", want_body)
        return
    got = json.loads(got_body)
    assert matches(want, got), f"{command}\nwant {want_body}\ngot  {got_body}"
