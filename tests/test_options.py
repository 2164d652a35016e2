"""The output rule at parse time (fersynth.options): every option or argument naming a path a command writes
refuses ``.git``, ``.dvc`` and Git-tracked project files while the command line is parsed, before the command
does any work. Commands are found from the click group, so a new command cannot skip the rule."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fersynth.cli import main
from fersynth.options import OutputRule
from tests.conftest import make_git_project

# Path parameters a command only reads, with why (``exists=True`` ones and ``--params`` are found without this).
READ_ONLY = {
    ("compare", "evaluated"): "fersynth evaluate's scores",
    ("compare", "train_metrics"): "fersynth train's metrics",
    ("report", "metrics"): "the metrics folder the page is rendered from",
    ("report", "samples"): "the contact sheets the page shows",
    ("results", "metrics_dir"): "the metrics the README's tables are rendered from",
    ("results", "pages"): "project pages: --write edits them in place between their result markers only",
}
TARGETS = [".dvc/config", ".dvc/cache/files/md5/zz", "dvc.yaml", ".git/x"]


def _commands(group: click.Group = main, prefix: tuple[str, ...] = ()):
    """``(words, command)`` for every command under ``group``, sub-groups (``mlflow-server start``) included."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def _reads_only(words: tuple[str, ...], param: click.Parameter) -> bool:
    return param.type.exists or param.name == "params_path" or (" ".join(words), param.name) in READ_ONLY


WRITTEN = [
    (words, command, param)
    for words, command in _commands()
    for param in command.params
    if isinstance(param.type, click.Path) and not _reads_only(words, param)
]
IDS = [f"{' '.join(words)}:{param.name}" for words, _, param in WRITTEN]


def _checked(param: click.Parameter) -> bool:
    return isinstance(param.callback, OutputRule)


def test_every_path_a_command_writes_takes_the_output_rule():
    unchecked = [f"{' '.join(words)}:{param.name}" for words, _, param in WRITTEN if not _checked(param)]
    assert not unchecked, f"use fersynth.options' decorators (or list a read-only path in READ_ONLY): {unchecked}"
    # the walk finds options and arguments, of every kind, in sub-groups too: it cannot pass by finding nothing
    for known in ["ingest:out", "train:model_dir", "train:metrics_path", "export:out", "evaluate:out"]:
        assert known in IDS
    assert {"compare:plots_dir", "validate:docs_dir", "mlflow-server start:root", "plots-template:out"} <= set(IDS)
    params = {(" ".join(words), param.name) for words, command in _commands() for param in command.params}
    assert set(READ_ONLY) <= params, "READ_ONLY names a parameter no command has"


@pytest.fixture(scope="module")
def shared_project(tmp_path_factory):
    """One git + DVC project for the many refusals (none of which may change it), with stand-in inputs."""
    root = make_git_project(tmp_path_factory.mktemp("project"))
    (root / "inputs" / "variant").mkdir(parents=True)
    (root / "inputs" / "file.csv").write_text("a\n")
    return root


@pytest.fixture
def in_project(shared_project, monkeypatch):
    monkeypatch.chdir(shared_project)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return shared_project


def _stand_in(param: click.Parameter, inputs: Path) -> str:
    """A value click accepts for a required ``param`` that is not the one under test."""
    if isinstance(param.type, click.Path):
        if not param.type.exists:
            return str(inputs / f"new-{param.name}")  # another output: a fresh path
        return str(inputs / ("variant" if param.type.dir_okay else "file.csv"))
    if isinstance(param.type, click.Choice):
        return str(param.type.choices[0])
    return "x"


def _command_line(command: click.Command, output: click.Parameter, target: str, inputs: Path) -> list[str]:
    """``output`` first (so that its check is the first to run), then every other required parameter."""
    options = [output.opts[0], target] if isinstance(output, click.Option) else []
    positional = []
    for param in command.params:
        if param is output and isinstance(param, click.Argument):
            positional.append(target)
        elif param is not output and param.required:
            value = _stand_in(param, inputs)
            positional += [value] if isinstance(param, click.Argument) else []
            options += [param.opts[0], value] if isinstance(param, click.Option) else []
    return [*options, *positional]


def _snapshot(root: Path) -> tuple[set[Path], dict[Path, bytes]]:
    """Every path under ``root`` and the bytes of every file outside ``.git``."""
    paths = set(root.rglob("*"))
    return paths, {p: p.read_bytes() for p in paths if p.is_file() and ".git" not in p.relative_to(root).parts}


def _no_work(**kwargs):
    raise AssertionError("the command ran: the output was not refused while parsing")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("words,command,param", WRITTEN, ids=IDS)
def test_an_output_over_git_dvc_or_a_project_file_is_refused_before_any_work(
    in_project, monkeypatch, words, command, param, target
):
    monkeypatch.setattr(command, "callback", _no_work)  # the command's body: its worker, MLflow, everything
    before = _snapshot(in_project)
    result = CliRunner().invoke(main, [*words, *_command_line(command, param, target, in_project / "inputs")])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    hint = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
    assert f"fersynth {words[0]}: error: '{hint}': refusing" in lines[0] and target in lines[0]
    assert _snapshot(in_project) == before


def _reaches_the_command(monkeypatch, words: list[str]) -> dict:
    """Invoke ``fersynth <words>`` with the command's body replaced by a recorder; what it received."""
    received = {}
    command = main
    for word in words:
        if not isinstance(command, click.Group):
            break
        command = command.commands[word]
    monkeypatch.setattr(command, "callback", lambda **kwargs: received.update(kwargs))
    result = CliRunner().invoke(main, words)
    assert result.exit_code == 0, result.output
    return received


def test_earlier_outputs_untracked_files_and_new_paths_pass(in_project, monkeypatch):
    received = _reaches_the_command(monkeypatch, ["train", "x", "--metrics", "metrics/score.json"])
    assert received["metrics_path"] == Path("metrics/score.json")  # tracked, and an output dvc.lock records
    (in_project / "notes.json").write_text("{}")  # untracked: an earlier manual run's output
    try:
        assert _reaches_the_command(monkeypatch, ["compare", "--out", "notes.json", "--plots-dir", "plots"])
    finally:
        (in_project / "notes.json").unlink()
    assert _reaches_the_command(monkeypatch, ["evaluate", "--out", "metrics"])  # a folder the files go into


def test_a_queued_experiments_workspace_under_dvc_tmp_writes_its_own_outputs(git_project, monkeypatch):
    workspace = git_project / ".dvc" / "tmp" / "exps" / "tmpabc"  # `dvc exp run --queue` runs in a copy here
    (workspace / "metrics").mkdir(parents=True)
    (workspace / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(workspace)
    outputs = ["--model-dir", "models/x", "--metrics", "metrics/x.json"]
    received = _reaches_the_command(monkeypatch, ["train", "x", *outputs])
    assert received["model_dir"] == Path("models/x")
    assert _reaches_the_command(monkeypatch, ["compare", "--plots-dir", "metrics/compare"])
    monkeypatch.chdir(git_project)
    result = CliRunner().invoke(main, ["train", "x", "--metrics", ".dvc/tmp/exps/tmpabc/../x.json"])
    assert result.exit_code == 2 and "inside .git or .dvc" in result.output  # from the main project: its .dvc


def test_plots_template_replaces_its_committed_template_in_dvc_and_nothing_else_there(git_project, monkeypatch):
    template = git_project / ".dvc" / "offline_plots.html"
    template.write_text("<html><head><title>fersynth - DVC plots</title></head></html>")
    for name in ("vega", "vega-lite", "vega-embed"):
        (git_project / f"{name}.js").write_text("x")
    libraries = ["--vega", "vega.js", "--vega-lite", "vega-lite.js", "--vega-embed", "vega-embed.js"]
    assert _reaches_the_command(monkeypatch, ["plots-template", *libraries])["out"] == Path(".dvc/offline_plots.html")
    template.write_text("<html>someone else's page</html>")
    result = CliRunner().invoke(main, ["plots-template", *libraries])
    assert result.exit_code == 2 and "'--out': refusing" in result.output
    assert template.read_text() == "<html>someone else's page</html>"
