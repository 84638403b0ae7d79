"""The package as a whole: every module imports on its own, the import graph has no cycle (lazy
imports inside functions included), and functions stay short enough to read whole."""

from __future__ import annotations

import ast
import os
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spamjob"
# Dotted names below spamjob ("cli", "scoring.job", "scoring.runtimes"): every module and package.
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts[: -1 if p.stem == "__init__" else None])
    for p in PACKAGE.rglob("*.py")
    if p.parent != PACKAGE or p.stem != "__init__"
)
ENGINES = [m for m in MODULES if m.startswith("engines")]  # import ray or pyspark: optional extras


def source_of(module: str) -> str:
    path = PACKAGE / module.replace(".", "/")
    return (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()


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
    """Each module first in a process of its own, forked from one that imported only third-party
    libraries (what most modules import; never spamjob), as many at once as there are CPUs."""
    import importlib
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "numpy", "pandas", "pyarrow", "pyarrow.parquet", "accelerate", "click"])
    alone_ok = [m for m in MODULES if m not in ENGINES]  # the engines' extras: tests/test_extras.py
    failed, workers = [], os.cpu_count() or 1
    for start in range(0, len(alone_ok), workers):
        batch = [
            (m, ctx.Process(target=importlib.import_module, args=(f"spamjob.{m}",)))
            for m in alone_ok[start : start + workers]
        ]
        for _, process in batch:
            process.start()
        for module, process in batch:
            process.join(120)
            if process.exitcode != 0:
                failed.append(f"spamjob.{module} (exit code {process.exitcode}: its traceback is above)")
    assert not failed


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


SEAM = "scoring.runtimes"
RUNTIME_LIBRARIES = ("onnx", "onnxruntime", "openvino")


def imported_names(module: str) -> list[tuple[str, bool]]:
    """Every module name `module` imports, and whether at its top level."""
    tree = ast.parse(source_of(module))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found += [(node.module or "", node in tree.body)]
        elif isinstance(node, ast.Import):
            found += [(a.name, node in tree.body) for a in node.names]
    return found


def test_the_layers_keep_their_arrows():
    """Persistence (artifact, the output folder) runs no model; no runtime imports the exporter;
    only the runtime seam imports a runtime's library (the exporter checks its graph through it)."""
    persistence = ["artifact", *(m for m in MODULES if m.startswith("scoring.output")), "scoring.recount"]
    wrong = [f"{m} -> {i}" for m in persistence if m in MODULES for i in imports(m) if i.startswith(SEAM)]
    runtimes = [m for m in MODULES if m.startswith(SEAM)]
    wrong += [f"{m} -> {i}" for m in runtimes for i in imports(m) if i.startswith("export")]
    wrong += [
        f"{m} -> {name}"
        for m in MODULES
        if not m.startswith(SEAM)
        for name, _ in imported_names(m)
        if name.split(".")[0] in RUNTIME_LIBRARIES
    ]
    assert not wrong
    assert {"scoring.runtimes.pytorch", "scoring.runtimes.ort"} <= set(runtimes)


def test_input_formats_know_files_not_jobs():
    """An input format (spamjob.scoring.formats) reads files: it imports no job, scheduler, output
    folder or runtime, and nothing outside the seam branches on a format's name."""
    job_side = ("scoring.setup", "scoring.units", "scoring.job", "scoring.loop", "scoring.output", SEAM)
    formats = [m for m in MODULES if m.startswith("scoring.formats")]
    wrong = [f"{m} -> {i}" for m in formats for i in imports(m) if i.startswith(job_side)]
    assert not wrong and {"scoring.formats.parquet_files", "scoring.formats.delimited"} <= set(formats)
    branching = re.compile(r"""\b(source|s)\.kind (==|!=|in)\b""")  # a Source's format by name
    assert [m for m in MODULES if branching.search(source_of(m))] == []


def test_core_never_imports_the_engines():
    """ray and pyspark are optional extras: only spamjob/engines/ imports them, and the core imports
    the engines' modules only through spamjob.engines.run (never at module level); a
    runtime's library (another extra) only inside the functions of the runtime seam."""
    found = [
        f"{module}: {name}"
        for module in MODULES
        for name, top in imported_names(module)
        if (name.split(".")[0] in ("ray", "pyspark") and module not in ENGINES)
        or (top and name.startswith("spamjob.engines.") and module not in ENGINES)
        or (top and name.split(".")[0] in RUNTIME_LIBRARIES)
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


def test_files_stay_short():
    """A module reads whole: no spamjob/ file over 400 lines, no test file over 600."""
    tests = PACKAGE.parent / "tests"
    long = [f"{p} ({n})" for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400]
    long += [f"{p} ({n})" for p in tests.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600]
    assert not long
