"""dvc.yaml's deps are honest: every stage lists the fersynth source its command runs, so a change to that
code makes DVC rerun the stage, no more than that source, and every source path it lists exists.

A stage's source is found from the code itself: the ``fersynth <subcommand>`` of its ``cmd`` names a click
command of ``fersynth.cli`` (one module per phase), whose body imports the stage's worker; from there every
``import fersynth...`` and ``from fersynth... import`` (lazy imports in function bodies included, and the packages
whose ``__init__.py`` an import runs) is followed through ``src/``. Stages come from DVC's own parser, so
``foreach`` stages are expanded exactly as ``dvc repro`` expands them.

Source is listed by room: ``src/fersynth/`` holds one folder per phase of the pipeline (``variants``, ``ingest``,
``train``, ...) beside top-level plumbing (COMMON, the ``cli/`` package: CLI), and a stage lists the folders of
the modules it runs (each folder is one ``dvc exp show`` column, where each file was one). The rooms import one
another without a circle, so a drawing of their imports reads as the stage graph.
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

# Plumbing every command imports: the package root, params parsing, user errors, logging, atomic writes, path
# names, the shared click options, and the command line's group, dispatch and option wiring (the module level of
# fersynth.cli's modules; each command's body belongs to its stage). They are deliberately NOT deps: they decide
# how a stage reads its params and writes its files, not what it computes, and listing them would rerun the whole
# 25-minute pipeline for a log format or a help text. The exclusion may hide nothing: these modules import only
# each other (test_common_modules_import_only_each_other, test_cli_functions_other_than_commands_import_no_stage).
COMMON = frozenset(
    {
        "fersynth",
        "fersynth.config",
        "fersynth.dvclock",
        "fersynth.errors",
        "fersynth.log",
        "fersynth.atomic",
        "fersynth.paths",
        "fersynth.options",
    }
)
CLI = frozenset(  # the click commands, one module per phase, and their group and dispatch
    "fersynth.cli" if path.stem == "__init__" else f"fersynth.cli.{path.stem}"
    for path in (SRC / "fersynth" / "cli").glob("*.py")
)
PLUMBING = COMMON | CLI  # the top level of src/fersynth/: every other module lives in a room
# `fersynth warm` runs a command in a fork of a server instead of a new process, with the same outputs
# (tests/test_warm.py): how a command starts, not what it computes. The console script imports it in every process.
WARM = frozenset(  # `fersynth warm`: its caller, server and worker, what they share, its guards for what a kill leaves
    {
        "fersynth.ops",
        "fersynth.ops.warm",
        "fersynth.ops.warm_client",
        "fersynth.ops.warm_server",
        "fersynth.ops.warm_worker",
        "fersynth.ops.warm_compat",
        "fersynth.ops.warm_limits",
        "fersynth.ops.warm_wire",
        "fersynth.ops.lockfile",
        "fersynth.ops.staging",
    }
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
        raise AssertionError(f"no `fersynth {subcommand}` command; fersynth.cli has {sorted(main.commands)}")
    source = textwrap.dedent(inspect.getsource(main.commands[subcommand].callback))
    return imports_in(source, "fersynth")


def entry_modules() -> set[str]:
    """What the console script (``cli.run``) imports in every process before any command: the CPU pin
    (``fersynth.runtime``), and the warm server's caller, which is plumbing (:data:`WARM`)."""
    from fersynth.cli import run

    return imports_in(textwrap.dedent(inspect.getsource(run)), "fersynth")


def stage_modules(subcommand: str) -> set[str]:
    """Every fersynth module a ``fersynth <subcommand>`` process runs that decides what it computes."""
    return closure(command_modules(subcommand) | (entry_modules() - WARM)) - COMMON


def room(name: str) -> str | None:
    """``fersynth.<room>`` of module ``name``; None for top-level plumbing."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and name not in PLUMBING else None


def room_dir(name: str) -> str:
    """The dvc.yaml dep that covers room ``fersynth.<room>``: its folder."""
    return f"src/{name.replace('.', '/')}"


def stage_source_deps(subcommand: str) -> list[str]:
    """The ``src/`` deps a stage running ``fersynth <subcommand>`` lists: its rooms' folders, sorted."""
    return sorted({room_dir(room(m)) for m in stage_modules(subcommand)})


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


def functions_of(tree: ast.Module) -> list[ast.FunctionDef]:
    """The functions a module defines at its top level or in its classes (nested ones are part of theirs)."""
    found = []
    for node in tree.body:
        members = node.body if isinstance(node, ast.ClassDef) else [node]
        found += [member for member in members if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef)]
    return found


def module_level_imports(name: str) -> set[str]:
    """fersynth modules that module ``name`` imports when it is imported: every import outside its functions."""
    path = module_file(name)
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    lines = path.read_text().splitlines(keepends=True)
    for function in functions_of(tree):  # blank out function bodies; what is left runs on import
        first = function.decorator_list[0].lineno if function.decorator_list else function.lineno
        for k in range(first - 1, function.end_lineno):
            lines[k] = "\n"
    return imports_in("".join(lines), package)


def command_callbacks(group=None) -> set[str]:
    """``module.qualname`` of every click command's function, sub-groups' commands (``mlflow-server start``) too."""
    from fersynth.cli import main

    found = set()
    for command in (group or main).commands.values():
        found.add(f"{command.callback.__module__}.{command.callback.__qualname__}")
        if hasattr(command, "commands"):
            found |= command_callbacks(command)
    return found


def test_common_modules_import_only_each_other():
    assert closure(set(COMMON)) == COMMON, "a common module imports more: list those modules as deps instead"
    assert "fersynth.cli.data" in CLI and "fersynth.cli.group" in CLI  # the glob finds the package's modules
    for name in sorted(CLI):
        stages = module_level_imports(name) - PLUMBING
        assert not stages, f"{name} imports a stage at module level (only inside a command's body): {stages}"


def test_cli_functions_other_than_commands_import_no_stage():
    # a command's body decides its stage's deps; a helper beside it that imported a room would slip past them
    callbacks = command_callbacks() | {"fersynth.cli.run"}  # run: entry_modules, counted for every stage
    assert {"fersynth.cli.data.demo", "fersynth.cli.ops.mlflow_server_start"} <= callbacks
    for name in sorted(CLI):
        path = module_file(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        source = path.read_text()
        for function in functions_of(ast.parse(source)):
            if f"{name}.{function.name}" in callbacks:
                continue
            body = textwrap.dedent(ast.get_source_segment(source, function, padded=True))
            stages = imports_in(body, package) - PLUMBING
            assert not stages, f"{name}.{function.name} is no command but imports {stages}: import it in the command"


def test_warm_is_plumbing_and_imports_no_command():
    # what lets WARM stay out of every stage's deps, and keeps cli -> warm one-way (no circle)
    assert closure(set(WARM)) <= WARM | COMMON  # the server runs as its own module: every part is checked
    assert "fersynth.runtime" in entry_modules(), "cli.run no longer pins fersynth.runtime: update stage_modules"


def test_the_top_level_holds_plumbing_only():
    top = {f"fersynth.{path.stem}" for path in (SRC / "fersynth").glob("*.py")} - {"fersynth.__init__"}
    assert top | {"fersynth"} == COMMON, "a module outside the plumbing belongs in a room (a folder)"
    # the one folder that is no room: the click commands, whose bodies count for their stages (command_modules)
    assert room("fersynth.cli.train") is None and room("fersynth.train.train") == "fersynth.train"


MAX_MODULE_LINES = 400  # one sitting's read; a module past it is split by what its parts do


def test_no_module_is_longer_than_one_sitting():
    lengths = {path.relative_to(SRC).as_posix(): len(path.read_text().splitlines()) for path in SRC.rglob("*.py")}
    assert len(lengths) > 100 and lengths["fersynth/variants/variant.py"] > 100  # the walk sees the package
    too_long = {path: n for path, n in sorted(lengths.items()) if n > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them by what their parts do): {too_long}"


def subcommand_of(name: str, cmd: str) -> str:
    program, subcommand = shlex.split(cmd)[:2]
    assert program == "fersynth", f"{name}: every stage runs a fersynth subcommand, not {program!r}"
    return subcommand


@pytest.mark.parametrize("name,cmd,deps", STAGES, ids=[name for name, _, _ in STAGES])
def test_stage_deps_cover_the_source_its_command_imports(name, cmd, deps):
    subcommand = subcommand_of(name, cmd)
    source = sorted(module_file(m).relative_to(ROOT).as_posix() for m in stage_modules(subcommand))
    missing = [path for path in source if not covered(path, deps)]
    assert not missing, f"dvc.yaml stage {name!r} (fersynth {subcommand}) imports, but does not list: {missing}"


@pytest.mark.parametrize("name,cmd,deps", STAGES, ids=[name for name, _, _ in STAGES])
def test_stage_source_deps_are_its_rooms_sorted(name, cmd, deps):
    # no room it does not run (a change there would rerun it for nothing), no file inside a listed folder
    # (one more column), in sorted order
    listed = [dep for dep in deps if dep.startswith("src/")]
    expected = stage_source_deps(subcommand_of(name, cmd))
    inside = [dep for dep in listed if any(dep != other and covered(dep, [other]) for other in listed)]
    assert not inside, f"dvc.yaml stage {name!r} lists files inside a folder it also lists: {inside}"
    assert listed == expected, f"dvc.yaml stage {name!r}: list its source as {expected}, not {listed}"


def test_source_deps_exist():
    stale = sorted(
        {dep for name, _, deps in STAGES for dep in deps if dep.startswith("src/") and not (ROOT / dep).exists()}
    )
    assert not stale, f"dvc.yaml lists source paths that do not exist: {stale}"


def test_the_import_walk_follows_lazy_imports_packages_and_from_imports():
    # the walk itself: ddpm's lazy `from fersynth.tracking import start_run` inside a function, the package
    # __init__ of fersynth.annotate.relabel run by `from fersynth.annotate.relabel import ...`, and a submodule
    # named in a from-import
    assert "fersynth.tracking" in closure({"fersynth.generate.ddpm"})
    relabel = {"fersynth.annotate", "fersynth.annotate.relabel", "fersynth.annotate.relabel.methods"}
    assert relabel <= closure(command_modules("relabel"))
    assert "fersynth.modeling.data" in imports_in("from fersynth.modeling import data", "fersynth")


def all_modules() -> list[str]:
    """Every fersynth module and package under ``src/``."""
    names = []
    for path in sorted((SRC / "fersynth").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def direct_imports(name: str) -> set[str]:
    """fersynth modules that ``name``'s source names in an import (TYPE_CHECKING ones too), without the packages
    an import runs: a module's own package runs before it, which is no circle."""
    path = module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return {m for m in imports_in(path.read_text(), package) if not name.startswith(m + ".") and m != name}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while not component or component[-1] != node:
                        component.append(stack.pop())
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_module_imports_itself_through_others():
    graph = {name: direct_imports(name) for name in all_modules()}
    assert not circles(graph), f"import circles between modules: {circles(graph)}"


def test_rooms_import_each_other_without_a_circle():
    # the drawing of the rooms' imports reads as the stage graph: no circle, so no arrow runs back up
    graph: dict[str, set[str]] = {}
    for name in all_modules():
        if room(name) is not None:
            targets = {room(m) for m in direct_imports(name) if room(m) is not None}
            graph.setdefault(room(name), set()).update(targets - {room(name)})
    assert set(graph) >= {"fersynth.variants", "fersynth.train", "fersynth.evaluate"}
    assert not circles(graph), f"rooms importing each other in a circle: {circles(graph)}"


def test_circles_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


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
