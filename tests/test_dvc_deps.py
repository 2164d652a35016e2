"""dvc.yaml's deps are honest: every stage lists the fersynth source its command runs, so a change to that
code makes DVC rerun the stage, and every source path it lists exists.

A stage's source is found from the code itself: the ``fersynth <subcommand>`` of its ``cmd`` names a click
command in ``cli.py``, whose body imports the stage's worker; from there every ``import fersynth...`` and
``from fersynth... import`` (lazy imports in function bodies included, and the packages whose
``__init__.py`` an import runs) is followed through ``src/``. Stages come from DVC's own parser, so
``foreach`` stages are expanded exactly as ``dvc repro`` expands them.
"""

from __future__ import annotations

import ast
import functools
import inspect
import shlex
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# Plumbing every command imports: the package root, params parsing, user errors, logging, atomic writes and
# path names, and cli.py's dispatch (its module level; each command's body belongs to its stage). They are
# deliberately NOT deps: they decide how a stage reads its params and writes its files, not what it computes,
# and listing them would rerun the whole 25-minute pipeline for a log format or a help text. The exclusion may
# hide nothing: these modules import only each other (test_common_modules_import_only_each_other).
COMMON = frozenset(
    {"fersynth", "fersynth.config", "fersynth.errors", "fersynth.log", "fersynth.atomic", "fersynth.paths"}
)


def module_file(name: str) -> Path | None:
    """``src/`` file of module or package ``name``; None when it is not a fersynth module (a function or class)."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_in(source: str, package: str) -> set[str]:
    """fersynth modules imported anywhere in ``source`` (module level or inside functions); ``package``
    resolves relative imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            # ``from fersynth.x import y`` imports module fersynth.x.y when y is one
            found |= {f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}")}
    return {name for name in found if name == "fersynth" or name.startswith("fersynth.")}


@functools.cache
def module_imports(name: str) -> frozenset[str]:
    """fersynth modules that module ``name``'s source imports, with the packages each import runs."""
    path = module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return frozenset(n for found in imports_in(path.read_text(), package) for n in with_packages(found))


def with_packages(name: str) -> list[str]:
    """``fersynth.a.b`` and the packages importing it runs first: ``fersynth``, ``fersynth.a``."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def closure(names: set[str]) -> set[str]:
    """Every fersynth module that importing ``names`` can import."""
    seen: set[str] = set()
    todo = [n for name in names for n in with_packages(name)]
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None:
            continue
        seen.add(name)
        todo += module_imports(name)
    return seen


def command_modules(subcommand: str) -> set[str]:
    """What the click command for ``fersynth <subcommand>`` imports (its body holds the worker's import)."""
    from fersynth.cli import main

    if subcommand not in main.commands:
        raise AssertionError(f"no `fersynth {subcommand}` command; cli.py has {sorted(main.commands)}")
    source = textwrap.dedent(inspect.getsource(main.commands[subcommand].callback))
    return imports_in(source, "fersynth")


def dvc_stages() -> list[tuple[str, str, list[str]]]:
    """(name, cmd, dep paths) of every stage of dvc.yaml, foreach expanded, as DVC resolves them."""
    from dvc.repo import Repo

    repo = Repo(str(ROOT))
    try:
        return [
            (stage.addressing, stage.cmd, [str(dep.def_path) for dep in stage.deps])
            for stage in repo.index.stages
            if stage.cmd
        ]
    finally:
        repo.close()


STAGES = dvc_stages()


def covered(path: str, deps: list[str]) -> bool:
    """A dep covers its own path and, when it is a directory, everything under it."""
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_common_modules_import_only_each_other():
    assert closure(set(COMMON)) == COMMON, "a common module imports more: list those modules as deps instead"
    cli = ast.parse(module_file("fersynth.cli").read_text())
    top_level = {node.module for node in cli.body if isinstance(node, ast.ImportFrom) and node.module}
    assert {m for m in top_level if m.startswith("fersynth")} <= COMMON, "cli.py imports a stage at module level"


@pytest.mark.parametrize("name,cmd,deps", STAGES, ids=[name for name, _, _ in STAGES])
def test_stage_deps_cover_the_source_its_command_imports(name, cmd, deps):
    program, subcommand = shlex.split(cmd)[:2]
    assert program == "fersynth", f"{name}: every stage runs a fersynth subcommand, not {program!r}"
    used = closure(command_modules(subcommand)) - COMMON
    source = sorted(module_file(m).relative_to(ROOT).as_posix() for m in used)
    missing = [path for path in source if not covered(path, deps)]
    assert not missing, f"dvc.yaml stage {name!r} (fersynth {subcommand}) imports, but does not list: {missing}"


def test_source_deps_exist():
    stale = sorted(
        {dep for name, _, deps in STAGES for dep in deps if dep.startswith("src/") and not (ROOT / dep).exists()}
    )
    assert not stale, f"dvc.yaml lists source paths that do not exist: {stale}"


def test_the_import_walk_follows_lazy_imports_packages_and_from_imports():
    # the walk itself: train's lazy `from fersynth.tracking import start_run` inside a function, the package
    # __init__ of fersynth.annotate.relabel run by `from fersynth.annotate.relabel import ...`, and a submodule named in a from-import
    assert "fersynth.tracking" in closure({"fersynth.train.train"})
    assert {"fersynth.annotate.relabel", "fersynth.annotate.relabel.methods"} <= closure(command_modules("reclassify"))
    assert "fersynth.modeling.data" in imports_in("from fersynth.modeling import data", "fersynth")


def test_every_trained_model_is_a_registered_artifact():
    """dvc.yaml's `artifacts:` names every model directory a stage writes under models/ (type model), and
    every artifact path is such an output: `dvc artifacts get` and the registry never point at nothing."""
    from dvc.repo import Repo

    repo = Repo(str(ROOT))
    try:
        artifacts = repo.artifacts.read()["dvc.yaml"]
        outputs = {str(out) for stage in repo.index.stages for out in stage.outs}
    finally:
        repo.close()
    models = {path for path in outputs if path.startswith("models/")}
    assert {artifact.path for artifact in artifacts.values()} == models
    assert {artifact.type for artifact in artifacts.values()} == {"model"}
    assert all(artifact.desc for artifact in artifacts.values())
