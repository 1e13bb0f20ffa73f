"""The package layout holds: the import contracts of pyproject.toml ([tool.importlinter]) pass, no module imports
itself back through others (no cycles), no module is over 500 lines, and the contract's literals (artifact
names, the exported signature's names) are spelled in jobs/contract.py alone."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["jobs", "serving", "sweeps", "k8s", "cli"]  # what the wheel ships (pyproject's packages.find)
MAX_LINES = 500


# jobctl_client is its own distribution (client/pyproject.toml); the rest sit at the top of the repository.
PACKAGE_DIRS = {"jobctl_client": ROOT / "client" / "jobctl_client"}


def _package_dir(package: str) -> Path:
    return PACKAGE_DIRS.get(package, ROOT / package)


def _present(packages) -> list[str]:
    return [p for p in packages if (_package_dir(p) / "__init__.py").is_file()]


def _python_files(packages) -> list[Path]:
    return sorted(f for p in _present(packages) for f in _package_dir(p).rglob("*.py"))


# ------------------------------------------------------------------------------------------ import contracts
def _config_for_this_tree(path: Path) -> Path:
    """pyproject's contracts, minus the packages this tree does not have (yet): import-linter refuses a root
    package it cannot find. Written in import-linter's INI format."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    present = set(_present(cfg["root_packages"]))

    def keep(names):
        return [n for n in names if n.split(".")[0] in present]

    lines = ["[importlinter]", "root_packages =", *(f"    {p}" for p in keep(cfg["root_packages"])),
             f"include_external_packages = {cfg.get('include_external_packages', False)}"]
    for i, contract in enumerate(cfg["contracts"]):
        lines += ["", f"[importlinter:contract:{i}]", f"name = {contract['name']}", f"type = {contract['type']}"]
        for key in ("source_modules", "forbidden_modules", "layers"):
            if key in contract:
                lines += [f"{key} ="] + [f"    {m}" for m in keep(contract[key])]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_import_contracts_hold(tmp_path):
    config = _config_for_this_tree(tmp_path / "importlinter.ini")
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "broken" not in proc.stdout.split("Contracts:")[-1].split("kept")[0]  # every contract was checked


def _module_graph():
    import grimp

    return grimp.build_graph(*_present(SHIPPED + ["jobctl_client", "bench", "demo", "tests"]), include_external_packages=False,
                             cache_dir=None)


def strongly_connected(graph) -> list[list[str]]:
    """Tarjan's algorithm over the module import graph: the groups of modules that import each other in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # iterative: a deep graph must not hit the recursion limit
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_strongly_connected_finds_a_cycle_and_nothing_else():
    class Graph:
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
        modules = set(edges)

        def find_modules_directly_imported_by(self, m):
            return self.edges[m]

    assert strongly_connected(Graph()) == [["a", "b", "c"]]


def test_no_import_cycles_between_modules():
    """Every import counts, including those inside functions (grimp sees them all): a lazy import is still an arrow
    a reader must follow, and a cycle through one is a cycle."""
    cycles = strongly_connected(_module_graph())
    assert not cycles, "modules that import each other in a circle: " + "; ".join(" <-> ".join(c) for c in cycles)


# ------------------------------------------------------------------------------------------------ module size
@pytest.mark.parametrize("package", SHIPPED + ["jobctl_client"])
def test_no_module_is_over_500_lines(package):
    long = {str(f.relative_to(ROOT)): n for f in _python_files([package])
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines (split along its seams): {long}"


# ----------------------------------------------------------------------------------------- contract literals
# The contract's facts as code elsewhere would spell them. "images" and "runs" are also ordinary words (a count of
# images in a benchmark's JSON, a --runs option), so they count only where they name the tensor (request.inputs
# ["images"], name="images", a feed {"images": x} passed to a call) or build a path (root / "runs", "runs/...").
SUBSTRINGS = {"serving_default": "the signature name", "leaderboard.json": "the leaderboard file",
              "metrics.json": "the metrics file"}


def _names_the_input_tensor(node, parent, grandparent) -> bool:
    if isinstance(parent, ast.Subscript) and parent.slice is node:  # request.inputs["images"], not result["images"]
        holder = parent.value
        return (holder.attr if isinstance(holder, ast.Attribute) else getattr(holder, "id", "")) in ("inputs", "outputs")
    if isinstance(parent, ast.keyword) and parent.arg == "name":
        return True
    return isinstance(parent, ast.Dict) and node in parent.keys and isinstance(grandparent, ast.Call)


def spelled_literals(source: str) -> list[tuple[int, str]]:
    """(line, what) for each string constant in code spelling a contract literal; docstrings do not count."""
    tree = ast.parse(source)
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docstrings:
            continue
        parent = parents.get(id(node))
        grandparent = parents.get(id(parent))
        if node.value == "images" and _names_the_input_tensor(node, parent, grandparent):
            found.append((node.lineno, "the input tensor name"))
        if ((node.value == "runs" and isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div))
                or (node.value.startswith("runs/") and isinstance(parent, ast.JoinedStr))):  # f"runs/{name}/{id}"
            found.append((node.lineno, "runs/ path building"))
        found += [(node.lineno, what) for text, what in SUBSTRINGS.items() if text in node.value]
    return sorted(found)


def test_spelled_literals_sees_code_not_docstrings_nor_plain_words():
    source = ('def f():\n    """writes metrics.json under runs/"""\n    return Path(root) / "runs" / f"{x}/metrics.json"\n'
              'req.inputs["images"].CopyFrom(t)\nspec = TensorSpec([None], name="images")\ncall(sig, {"images": x})\n'
              'result = {"images": 40, "runs": 3}\nn = result["images"]\nhelp = "where runs/ and models/ are"\n'
              'path = f"runs/{name}/{run_id}"\n')
    assert spelled_literals(source) == [(3, "runs/ path building"), (3, "the metrics file"),
                                        (4, "the input tensor name"), (5, "the input tensor name"),
                                        (6, "the input tensor name"), (10, "runs/ path building")]


def test_contract_literals_are_spelled_only_in_jobs_contract():
    spelled = {f"{f.relative_to(ROOT)}:{line}": what for f in _python_files(SHIPPED + ["bench"])
               if f != ROOT / "jobs" / "contract.py" for line, what in spelled_literals(f.read_text())}
    assert not spelled, f"use jobs.contract instead of spelling these: {spelled}"


# ------------------------------------------------------------------------------------------- the picture
def test_the_architecture_document_shows_the_imports_the_code_has():
    from tests.support import layering

    documented = layering.documented_block(layering.DOC.read_text())
    assert documented == layering.generated_block(), (
        "docs/ARCHITECTURE.md's layering diagram is stale: run `python -m tests.support.layering` and review the change")
