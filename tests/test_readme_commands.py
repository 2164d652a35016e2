"""The shell commands of README.md and docs/*.md, as a newcomer types them after the two quickstart commands and
`source .venv/bin/activate`. Every command of every ```bash block is classified below: run here (in a fresh clone
whose DVC cache is this checkout's, i.e. the state `make repro` leaves), or not run, with the reason and the test
that covers it instead. A new documented command fails the first test until it is classified. Every `-S` of a
`dvc exp run` (in a block or inline) must name a params file and a key in it, as DVC requires."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))

# (pattern matched against the whole command, how). "run": run as written (after SUBSTITUTIONS) on a fresh clone;
# "run after repro": the same where the outputs exist (a clone whose DVC cache is this checkout's after `make
# repro`; CI's clone has none, so there they are not run and the test says so); anything else is the reason it
# is not run here.
CLASSIFIED: list[tuple[str, str]] = [
    (r"make (repro|test)\b.*", "quickstart: the state this test starts from"),
    (r"source \.venv/bin/activate.*", "quickstart: the PATH every command runs with"),
    (r"(\.venv/bin/)?fersynth warm -- dvc (exp run|repro) .*", "re-runs stages for minutes: tests/test_warm.py"),
    (r"dvc exp run (--queue )?-S .*", "trains for minutes: tests/test_pipeline.py (exp run, queued sweep)"),
    (r"for n in .*dvc exp run --queue .*", "trains for minutes: tests/test_pipeline.py (queued sweep)"),
    (r"dvc queue start .*", "trains for minutes: tests/test_pipeline.py (queued sweep)"),
    (
        r"dvc exp (push|pull|apply) .*|git pull && dvc exp pull .*",
        "names experiments of a sweep: tests/test_pipeline.py",
    ),
    (r"dvc plots diff \$\(dvc exp ls --name-only\).*", "needs a sweep's experiments: tests/test_pipeline.py"),
    (r"dvc exp show .*", "run"),
    (r"dvc plots show.*", "run"),
    (r"dvc (push|pull|status)\b.*", "run after repro"),
    (r"git clone <repo> \.\./other .*", "run after repro"),
    (r"dvc artifacts get <repo> .*", "run after repro"),
    (r"fersynth predict fer .*", "run"),
    (r"fersynth results --write", "run"),
    (r"fersynth predict models/.*", "run after repro"),
    (r"fersynth serve .*", "a server until stopped: tests/test_predict.py serves fer and a model over HTTP"),
    (r"mlflow ui .*", "a server until stopped: tests/test_mlflow_server.py"),
    (r"xdg-open .*", "needs a desktop; the report itself: tests/test_report.py (Chromium)"),
    (r"dvc remote (add|modify) .*(ssh|s3|gs)://.*|dvc remote modify --local team .*", "needs credentials"),
    (r"git add \.dvc/config && git commit .* && dvc push", "needs the credentials of the remote above"),
    (r"export MLFLOW_TRACKING_URI=sqlite:///\$PWD/mlflow\.db", "sets the shell for the server below"),
    (
        r"(\.venv/bin/)?mlflow models serve .*|curl .* 127\.0\.0\.1:5001/invocations",
        "a server until stopped: tests/test_mlflow_model.py serves a model and posts both bodies",
    ),
    (r"torchrun .*", "needs GPUs: tests/test_data_parallel.py and test_generate_distributed.py (gloo on CPUs)"),
]

SUBSTITUTIONS = {  # placeholders of the README -> what this test has
    "<repo>": "{origin}",
    "--in photos/": "--in {photos}",
    " --in clip.mp4": "",
}


def readme_commands(text: str) -> list[str]:
    """Every command line of the document's ```bash / ```sh blocks: continuation lines joined, comments and
    blank lines dropped."""
    commands = []
    for language, body in _blocks(text):
        if language not in ("bash", "sh", "shell"):
            continue
        for line in re.sub(r"\s*\\\n\s*", " ", body).splitlines():
            command = _strip_comment(line).strip()
            if command:
                commands.append(command)
    return commands


def _blocks(text: str) -> list[tuple[str, str]]:
    blocks, language, body = [], None, []
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\S*)\s*$", line)
        if fence and language is None:
            language, body = fence.group(1) or "text", []
        elif fence:
            blocks.append((language, "\n".join(body)))
            language = None
        elif language is not None:
            body.append(line)
    return blocks


def _strip_comment(line: str) -> str:
    """``line`` without its ``#`` comment (a ``#`` inside quotes or ``$#`` is not one)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def classify(command: str) -> str:
    matches = [how for pattern, how in CLASSIFIED if re.fullmatch(pattern, command)]
    assert matches, f"README command not classified in {__file__}: {command!r}"
    return matches[0]


def _all_commands() -> list[str]:
    return [c for doc in DOCUMENTS for c in readme_commands((ROOT / doc).read_text())]


def test_every_readme_command_is_classified_and_every_rule_is_used():
    commands = _all_commands()
    assert len(commands) > 20
    used = {pattern for pattern, _ in CLASSIFIED if any(re.fullmatch(pattern, c) for c in commands)}
    for command in commands:
        classify(command)
    assert used == {p for p, _ in CLASSIFIED}, f"rules matching no README command: {set(dict(CLASSIFIED)) - used}"


def test_comments_continuations_and_quotes_are_read_as_a_shell_would():
    text = "```bash\ndvc exp show --drop '.*' \\\n  --keep 'a|b#c'   # the answer\n# only a comment\n```\n"
    assert readme_commands(text) == ["dvc exp show --drop '.*' --keep 'a|b#c'"]
    assert readme_commands("```text\nfersynth demo ──> data\n```\n") == []


def _fresh_clone(tmp_path: Path) -> tuple[Path, str | None]:
    """A fresh clone; its outputs come from this checkout's DVC cache where it has them: the state `make repro`
    leaves, without the minutes of recomputing it (the committed dvc.lock reproduces byte for byte:
    tests/test_runtime.py). Returns the clone and why the outputs are missing (None: they are there)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(ROOT / ".venv")
    env = _activated()
    subprocess.run(["dvc", "cache", "dir", "--local", str(ROOT / ".dvc" / "cache")], cwd=clone, env=env, check=True)
    subprocess.run(["dvc", "config", "--local", "cache.type", "symlink,copy"], cwd=clone, env=env, check=True)
    done = subprocess.run(["dvc", "checkout", "-q"], cwd=clone, env=env, capture_output=True, text=True)
    return clone, None if done.returncode == 0 else f"no outputs in the DVC cache: {done.stderr.strip()[-200:]}"


def _activated() -> dict[str, str]:
    """The environment after `source .venv/bin/activate`."""
    venv = Path(sys.executable).parent
    return os.environ | {"PATH": f"{venv}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv.parent)}


@pytest.mark.slow
def test_the_readme_commands_run_as_written_on_a_fresh_clone(tmp_path):
    clone, no_outputs = _fresh_clone(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    from skimage import data, io

    io.imsave(photos / "astronaut.png", data.astronaut())
    values = {"origin": str(clone), "photos": str(photos)}
    failed, ran, not_run = [], [], []
    for command in _all_commands():
        how = classify(command)
        if how == "run after repro" and no_outputs:
            not_run.append(command)
        if how not in ("run", "run after repro") or command in not_run:
            continue
        for placeholder, value in SUBSTITUTIONS.items():
            command = command.replace(placeholder, value.format(**values))
        done = subprocess.run(
            ["bash", "-c", command], cwd=clone, env=_activated(), capture_output=True, text=True, timeout=900
        )
        ran.append(command)
        if done.returncode != 0:
            failed.append(f"{command}: exit {done.returncode}: {(done.stderr or done.stdout)[-600:]}")
    print(f"ran {len(ran)} README commands; not run ({no_outputs}): {not_run}")
    assert failed == [] and len(ran) >= 5
    assert "happy" in (clone / "predictions" / "predictions.csv").read_text()  # fer on the astronaut
    if not no_outputs:
        assert (clone / "merged-model" / "model.safetensors").is_file()  # dvc artifacts get, through the tags
    if not no_outputs:
        assert (tmp_path / "fersynth-dvc-remote").is_dir()  # `dvc push` went to the default remote beside the clone
        assert (tmp_path / "other" / "models" / "merged").is_dir()  # and the sibling clone pulled from it


# --- `dvc exp run -S` targets ---------------------------------------------------------------------------------

SET_PARAM = re.compile(r"(?<![\w-])-S\s+(['\"]?)([^\s'\"]+)\1")


def set_params(text: str) -> list[str]:
    """Every ``-S [FILE:]KEY=VALUE`` of a document: in its ```bash blocks and in its inline `code` (which may run
    over a line break), quotes removed."""
    found = [m.group(2) for command in readme_commands(text) for m in SET_PARAM.finditer(command)]
    inline = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.M | re.S)  # fenced blocks: read above
    for span in re.findall(r"`([^`]+)`", inline):
        found += [m.group(2) for m in SET_PARAM.finditer(span)]
    return found


def set_param_problem(override: str, root: Path = ROOT) -> str | None:
    """Why DVC would refuse ``-S override`` here, or None. The KEY of ``[FILE:]KEY=VALUE`` (FILE: params.yaml)
    must be in FILE, as `dvc exp run` requires (it edits the file in Hydra's struct mode); ``+KEY`` adds a key
    that is not there yet, under a section that is."""
    import yaml

    target, equals, _ = override.partition("=")
    file, colon, key = target.rpartition(":") if ":" in target else ("params.yaml", "", target)
    if not equals or not key:
        return f"-S {override}: not [FILE:]KEY=VALUE"
    if not (root / file).is_file():
        return f"-S {override}: no params file {file}"
    add = key.startswith("+")
    parts = key.lstrip("+~").split(".")
    node = yaml.safe_load((root / file).read_text())
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if not isinstance(node, dict) or (part not in node and not (add and last)):
            return f"-S {override}: {file} has no {'.'.join(parts[: depth + 1])}"
        node = node.get(part)
    if add and not key.startswith("++") and node is not None:
        return f"-S {override}: {file} already has {'.'.join(parts)} (drop the +)"
    return None


def test_every_documented_set_param_names_a_params_file_and_a_key_in_it():
    overrides = {(doc, o) for doc in DOCUMENTS for o in set_params((ROOT / doc).read_text())}
    assert len(overrides) > 5 and any(":" in o for _, o in overrides)  # configs files' keys are found too
    problems = [f"{doc}: {problem}" for doc, o in sorted(overrides) if (problem := set_param_problem(o))]
    assert problems == []


def test_the_set_param_check_reads_files_keys_quotes_and_line_breaks(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  nhfi: {trials: 1}\n")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "gate.yaml").write_text("prompts: {action_units: paper}\n")
    text = "a `dvc exp run -S\n  'configs/gate.yaml:prompts.action_units=all'` b `-S train.nhfi.epochs=2`\n"
    text += "```bash\ndvc exp run -S +train.nhfi.epochs=2 -S gate.seed=1   # a comment\n```\n"
    found = set_params(text)
    assert found == ["+train.nhfi.epochs=2", "gate.seed=1", "configs/gate.yaml:prompts.action_units=all",
                     "train.nhfi.epochs=2"]  # fmt: skip
    assert [set_param_problem(o, tmp_path) for o in found] == [
        None,
        "-S gate.seed=1: params.yaml has no gate",
        None,
        "-S train.nhfi.epochs=2: params.yaml has no train.nhfi.epochs",
    ]
    assert "already has train.nhfi.trials" in set_param_problem("+train.nhfi.trials=2", tmp_path)
    assert "no params file configs/nope.yaml" in set_param_problem("configs/nope.yaml:seed=1", tmp_path)
