"""The package as a whole: every module imports on its own, the import graph has no cycle (lazy
imports inside functions included), and functions stay short enough to read whole."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spamjob"
# Dotted names below spamjob ("cli", "scoring.job"): every module but the optional engines'.
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
    for p in PACKAGE.rglob("*.py")
    if p.stem != "__init__" and p.parent.name != "engines"
)


def source_of(module: str) -> str:
    return (PACKAGE / f"{module.replace('.', '/')}.py").read_text()


LONGEST = 60  # lines; a longer function says why in a comment on its `def` line


def imports(module: str) -> set[str]:
    """spamjob modules that `module` imports anywhere (top level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(source_of(module))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spamjob"):
            base = node.module.removeprefix("spamjob").lstrip(".")
            names = [base, *(f"{base}.{a.name}".lstrip(".") for a in node.names)]
            found.update(n for n in names if n in MODULES)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("spamjob.") for a in node.names if a.name.startswith("spamjob."))
    return found - {module}


def test_import_graph_is_acyclic():
    graph = {m: imports(m) for m in MODULES}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")
    assert set(order) == set(MODULES)


def test_every_module_imports_alone():
    """Each module in an interpreter of its own (as many at once as there are CPUs)."""
    from concurrent.futures import ThreadPoolExecutor

    code = "import importlib, sys; [importlib.import_module('spamjob.' + m) for m in sys.argv[1:]]"

    def alone(module: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for module, r in zip(MODULES, pool.map(alone, MODULES)):
            assert r.returncode == 0, f"spamjob.{module}: {r.stderr[-2000:]}"


def test_functions_are_short():
    long = []
    for module in MODULES:
        source = source_of(module)
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > LONGEST and "#" not in lines[node.lineno - 1]:
                    long.append(f"{module}.{node.name} ({n} lines)")
    assert not long, f"functions over {LONGEST} lines without a reason on their def line: {', '.join(long)}"


ONNX_MODULES = ("export.onnx", "scoring.ort_predictor")


def test_core_never_imports_the_engines():
    """ray and pyspark are optional extras: only spamjob/engines/ imports them, and the core imports
    spamjob.engines only inside the function that runs an engine (never at module level); onnx and
    onnxruntime (another extra) only inside the functions of the ONNX export and ONNX Runtime's
    predictor."""
    found = []
    for module in MODULES:
        tree = ast.parse(source_of(module))
        for node in ast.walk(tree):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            top = node in tree.body
            found += [
                f"{module}: {n}"
                for n in names
                if n.split(".")[0] in ("ray", "pyspark")
                or (top and n.startswith("spamjob.engines"))
                or (n.split(".")[0] in ("onnx", "onnxruntime") and (top or module not in ONNX_MODULES))
            ]
    assert not found
    engine_files = sorted(p.name for p in (PACKAGE / "engines").glob("*.py"))
    assert engine_files == ["__init__.py", "ray.py", "ray_cluster.py", "spark.py"]


def test_pre_commit_runs_the_ruff_that_ci_runs():
    """.pre-commit-config.yaml and the test extra pin one ruff version: both format alike."""
    import re

    import yaml

    root = PACKAGE.parent
    (pinned,) = re.findall(r'"ruff==([0-9.]+)"', (root / "pyproject.toml").read_text())
    hooks = yaml.safe_load((root / ".pre-commit-config.yaml").read_text())["repos"]
    assert [h["rev"] for h in hooks if h["repo"].endswith("/ruff-pre-commit")] == [f"v{pinned}"]
