"""The documentation cannot drift from the repository: README.md and docs/*.md are checked here.

- Links: every relative link (``[text](path#anchor)``) names a file in the repository and, with an anchor, a
  heading of that file; every backticked repository path (``src/...``, ``tests/...``, ``metrics/...``) exists,
  as a file Git has or would commit, or as an output ``dvc repro`` writes (``dvc.lock``); every backticked
  ``fersynth.module.name`` exists in ``src/``.
- Numbers: a measured number is written once, in a committed JSON (a metrics file, a benchmark's result, or
  ``metrics/bench/history.json`` for measurements no benchmark rewrites), and quoted in the prose with a marker
  right after it, e.g. ``3.4 s<!-- from metrics/bench/ingest.json: fer2013_csv.fersynth_ingest.seconds -->``
  (``... / 60 -->`` or ``... * 100 -->`` scale it); the number written must be that value, rounded to the
  decimals shown. A quoted word (`` `helps`<!-- from ... --> ``) must equal the value. A time, size, rate or
  speed-up in the prose without a marker fails, unless it is a target (``<= 10 min``) or in UNMARKED below.
  The tables between ``<!-- results:NAME -->`` markers are rendered from the metrics (``tests/test_results.py``).
- The stage table of ``docs/pipeline.md`` has a row for every stage of ``dvc.yaml``; each row leads from the
  ``cli/`` file that holds its stages' command to worker functions that exist there and that the command imports
  (read with ast: nothing heavy is imported), and names the configs files and params keys its stages declare.
  Its commands table names only options the commands have, and every option ``dvc.yaml`` and the Makefile use;
  ``docs/development.md`` lists every command under its ``cli/`` file.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


# --- reading markdown ---------------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")


def prose(text: str) -> str:
    """``text`` with fenced code blocks blanked (line numbers kept): commands and examples are not prose."""
    lines, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            lines.append("")
        else:
            lines.append("" if inside else line)
    return "\n".join(lines)


def line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup and punctuation dropped, lower case, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    return anchors_in(path.read_text(encoding="utf-8"))


def anchors_in(text: str) -> frozenset[str]:
    """The anchors of a markdown text's headings (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(text).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            found.add(f"{base}-{seen[base]}" if base in seen else base)
            seen[base] = seen.get(base, 0) + 1
    return frozenset(found)


# --- what the repository holds ------------------------------------------------------------------------------


@functools.cache
def repository_files() -> frozenset[str]:
    """Files Git has or would commit (tracked, or untracked and not ignored): what a fresh clone holds."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return frozenset(name for name in listed.split("\0") if name and (ROOT / name).exists())


@functools.cache
def repository_dirs() -> frozenset[str]:
    dirs = set()
    for name in repository_files():
        parts = name.split("/")[:-1]
        dirs |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
    return frozenset(dirs)


@functools.cache
def dvc_outputs() -> tuple[str, ...]:
    """Every output of dvc.lock: what ``dvc repro`` (or ``dvc pull``) puts in a fresh clone."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    outs = {out["path"].rstrip("/") for stage in lock["stages"].values() for out in stage.get("outs", [])}
    return tuple(sorted(outs))


PLACEHOLDER = re.compile(r"<[^>]+>|\$?\{[^}]+\}|\*+|N{3,}")  # <experiment>, {a,b}, ${key}, *, shard-NNNNN


def exists(relative: str) -> bool:
    """``relative`` (from the repository root; may end in / and hold placeholders such as ``<experiment>``) names
    a file or folder of the repository, a DVC output, a folder holding one, or something inside one (which only
    ``dvc repro`` makes)."""
    parts = [p for p in relative.strip("/").split("/") if p not in ("", ".")]
    patterns = [re.compile("[^/]+".join(map(re.escape, PLACEHOLDER.split(part)))) for part in parts]

    def matches(candidate: str, count: int) -> bool:
        names = candidate.split("/")
        return len(names) >= count and all(p.fullmatch(n) for p, n in zip(patterns[:count], names, strict=False))

    if not parts or any(
        len(c.split("/")) == len(parts) and matches(c, len(parts)) for c in repository_files() | repository_dirs()
    ):
        return True
    # a DVC output (or a path inside one, or a folder holding one): compare the components both have
    return any(matches(out, min(len(parts), len(out.split("/")))) for out in dvc_outputs())


# --- links --------------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REPO_PATH = re.compile(r"`((?:src|docs|tests|metrics|configs|benchmarks|reports|data|models|\.ci|\.dvc)/[^`\s:]*)")
MODULE = re.compile(r"`(fersynth(?:\.[A-Za-z_]\w*)+)")
PER_USER = {".dvc/config.local"}  # git-ignored on purpose: each person's remote login


def broken_links(path: Path, raw: str | None = None) -> list[str]:
    """Dead links of ``path`` (or of ``raw`` as if it were ``path``'s text)."""
    raw = path.read_text(encoding="utf-8") if raw is None else raw
    text = prose(raw)
    text_no_code = re.sub(r"`[^`\n]*`", lambda m: " " * len(m.group(0)), text)
    problems = []
    for match in LINK.finditer(text_no_code):
        target = match.group(1)
        where = f"{path.relative_to(ROOT)}:{line_of(text, match.start())}: {target}"
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        try:
            relative = linked.relative_to(ROOT).as_posix()
        except ValueError:
            problems.append(f"{where}: outside the repository")
            continue
        if file_part and not exists(relative):
            problems.append(f"{where}: no such file in the repository")
        elif anchor and linked.suffix == ".md":
            found = anchors_in(raw) if linked == path else anchors(linked)
            if anchor not in found:
                problems.append(f"{where}: no heading #{anchor} in {relative}")
    return problems


def missing_paths(path: Path, raw: str | None = None) -> list[str]:
    text = prose(path.read_text(encoding="utf-8") if raw is None else raw)
    problems = []
    for match in REPO_PATH.finditer(text):
        name = match.group(1).rstrip(".,;)")
        if "/tmp/" in name or name.startswith(".dvc/tmp") or name in PER_USER:
            continue  # a scratch location or a file each user makes, not a file of the repository
        if not exists(name):
            where = f"{path.relative_to(ROOT)}:{line_of(text, match.start())}"
            problems.append(f"{where}: `{name}` is not in the repository")
    for match in MODULE.finditer(text):
        if match.group(1).count(".") == 1 and not module_exists(match.group(1)):
            continue  # `fersynth.dvc_root`: an MLflow tag of fersynth's, not a module
        if not module_exists(match.group(1)):
            problems.append(f"{path.relative_to(ROOT)}:{line_of(text, match.start())}: `{match.group(1)}` not in src/")
    return problems


def module_exists(dotted: str) -> bool:
    """``fersynth.a.b`` is a module or package under src/, or a module followed by names defined in it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT / "src" / Path(*parts[:cut])
        for file in (base.with_suffix(".py"), base / "__init__.py"):
            if file.is_file():
                rest = parts[cut:]
                return not rest or re.search(rf"\b(def|class)\s+{rest[0]}\b|^{rest[0]}\s*[:=]", file.read_text(), re.M)
    return False


@pytest.mark.parametrize("path", documents(), ids=_ids(documents()))
def test_every_relative_link_and_anchor_resolves(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", documents(), ids=_ids(documents()))
def test_every_repository_path_and_module_named_exists(path):
    assert missing_paths(path) == []


def test_the_link_checker_finds_dead_links_anchors_and_paths():
    text = (
        "# Title\n\n## A `code` heading, twice\n\n## A `code` heading, twice\n\n"
        "[ok](pipeline.md#a-code-heading-twice-1) [top](#title) [dvc](../dvc.yaml) [web](https://dvc.org)\n"
        "[gone](PIPELINE.md) [bad anchor](#nowhere) [readme anchor](../README.md#no-such-heading)\n"
        "`src/fersynth/nosuch/` `tests/test_docs.py` `metrics/train/<experiment>.json` `data/original/fer2013`\n"
        "`fersynth.variants.variant.Variant` `fersynth.variants.nosuch` `fersynth.variants.variant.Nothing`\n"
        "```bash\n[in code](nothing.md) `src/not/checked`\n```\n"
    )
    page = ROOT / "docs" / "pipeline.md"  # read as if it were this page (its links resolve from docs/)
    problems = broken_links(page, text) + missing_paths(page, text)
    assert len(problems) == 6, problems
    for expected in ("PIPELINE.md: no such file", "#nowhere: no heading", "#no-such-heading: no heading"):
        assert any(expected in p for p in problems), (expected, problems)
    for expected in ("`src/fersynth/nosuch/`", "`fersynth.variants.nosuch`", "`fersynth.variants.variant.Nothing`"):
        assert any(expected in p for p in problems), (expected, problems)


# --- numbers ------------------------------------------------------------------------------------------------

NUMBER = r"(?:(?<![^\s(\[])[+-])?\d[\d,]*(?:\.\d+)?"  # a sign only where one can be written: "30-36%" is 36
UNIT = r"(?:\s?(?:%|x|ms|us|s|min|h|KB|MiB|GiB|MB|GB|img/s|images/s|pts|points))?"
MARKER = re.compile(r"<!-- from (?P<file>[\w./-]+\.json): (?P<key>\S+?)(?: (?P<op>[*/]) (?P<factor>[\d.]+))? -->")
QUOTED = re.compile(rf"(?:`(?P<code>[^`]+)`|\*\*(?P<bold>[^*]+)\*\*|(?P<plain>{NUMBER}{UNIT}))(?P<close>\*\*)?$")
MEASURE = re.compile(
    r"(?<![\w.@/-])(?P<value>\d[\d,]*(?:\.\d+)?)(?P<unit>\s?(?:ms|us|s|min|MiB|GiB|MB|GB|img/s|images/s)(?![\w/])"
    r"|x(?![\w\d]))"
)
RESULTS_BLOCK = re.compile(r"<!-- results:(\w+) -->.*?<!-- /results:\1 -->", re.S)
# Times, sizes and rates in the prose that are not measurements: settings, limits and facts about other
# software. (file, the text as written)
UNMARKED = {
    ("docs/checks.md", "FER2013's natural 16.4x imbalance"),  # the published dataset's, paper 001 Table 1
    ("docs/data-docs.md", "(16.4x, paper 001 Table 1)"),
    ("docs/data-docs.md", "(16.4x) also passes"),
    ("docs/gpus.md", "within 2 s"),  # the tracking client's timeout, a setting
}


def lookup(data, key: str):
    """``key`` in nested JSON: dot-separated names (a name may itself hold dots: the longest name present wins)
    and list indexes."""
    parts = key.split(".")
    while parts:
        if isinstance(data, list):
            data, parts = data[int(parts[0])], parts[1:]
            continue
        for cut in range(len(parts), 0, -1):
            name = ".".join(parts[:cut])
            if name in data:
                data, parts = data[name], parts[cut:]
                break
        else:
            raise KeyError(f"{'.'.join(parts)} (have {sorted(data)[:12]})")
    return data


def written_value(written: str) -> tuple[float, int, bool]:
    """The number in ``written`` (``+1,021.5 s``): its value, decimals shown and whether a sign was written."""
    number = re.match(NUMBER, written.strip()).group(0)
    decimals = len(number.split(".")[1]) if "." in number else 0
    return float(number.replace(",", "")), decimals, number.startswith(("+", "-"))


def quote_problems(path: Path, root: Path = ROOT) -> list[str]:
    text = prose(path.read_text(encoding="utf-8"))
    problems = []
    for match in MARKER.finditer(text):
        if text[text.rfind("\n", 0, match.start()) + 1 : match.start()].count("`") % 2:
            continue  # inside `code`: an example of a marker, not a quote
        where = f"{path.relative_to(root)}:{line_of(text, match.start())}"
        source = root / match["file"]
        if not source.is_file():
            problems.append(f"{where}: no {match['file']}")
            continue
        try:
            value = lookup(json.loads(source.read_text()), match["key"])
        except (KeyError, IndexError, ValueError) as error:
            problems.append(f"{where}: {match['file']} has no {match['key']}: {error}")
            continue
        quoted = QUOTED.search(text[max(0, match.start() - 120) : match.start()])
        if not quoted:
            problems.append(f"{where}: nothing quoted right before the marker for {match['key']}")
            continue
        written = quoted["code"] or quoted["bold"] or quoted["plain"]
        if isinstance(value, str | bool) or value is None:
            if written != str(value):
                problems.append(f"{where}: wrote {written!r}, {match['file']} {match['key']} is {value!r}")
            continue
        if match["op"]:
            value = value * float(match["factor"]) if match["op"] == "*" else value / float(match["factor"])
        try:
            number, decimals, signed = written_value(written)
        except AttributeError:
            problems.append(f"{where}: {written!r} is not a number ({match['key']} = {value!r})")
            continue
        expected = f"{value:{'+' if signed else ''}.{decimals}f}"
        shown = re.match(NUMBER, written.strip()).group(0).replace(",", "")
        if expected != shown:
            problems.append(f"{where}: wrote {shown}, {match['file']} {match['key']} says {expected}")
    return problems


def unmarked_measurements(path: Path, root: Path = ROOT) -> list[str]:
    relative = path.relative_to(root).as_posix()
    text = prose(path.read_text(encoding="utf-8"))
    text = RESULTS_BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text)  # rendered: tests/test_results.py
    text = re.sub(r"`[^`\n]*`", lambda m: " " * len(m.group(0)), text)  # code: commands, params, settings
    problems = []
    for match in MEASURE.finditer(text):
        after = text[match.end() : match.end() + 20]
        before = text[max(0, match.start() - 4) : match.start()]
        if re.match(r"(\*\*)?<!-- from ", after) or re.search(r"(<=|>=|[<>~]) ?$", before):
            continue
        line = text.splitlines()[line_of(text, match.start()) - 1]
        if any(file == relative and phrase in line for file, phrase in UNMARKED):
            continue
        problems.append(f"{relative}:{line_of(text, match.start())}: {match.group(0).strip()!r} has no source marker")
    return problems


@pytest.mark.parametrize("path", documents(), ids=_ids(documents()))
def test_every_quoted_number_is_the_value_in_its_json(path):
    assert quote_problems(path) == []


@pytest.mark.parametrize("path", documents(), ids=_ids(documents()))
def test_no_measured_time_size_or_speed_up_is_written_without_its_source(path):
    assert unmarked_measurements(path) == []


def test_the_number_check_reads_keys_scales_rounds_and_words(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"a": {"b.c": 1414.5, "l": [0.851, "helps"]}}))
    page = tmp_path / "p.md"
    page.write_text(
        "ok **23.6 min**<!-- from m.json: a.b.c / 60 --> and 85%<!-- from m.json: a.l.0 * 100 -->, "
        "`helps`<!-- from m.json: a.l.1 -->, 1,414<!-- from m.json: a.b.c -->\n"
        "bad 23.5 min<!-- from m.json: a.b.c / 60 --> `hurts`<!-- from m.json: a.l.1 --> 1<!-- from m.json: a.x -->\n"
        "unmarked 3.4 s, a target <= 10 min, 48x48 pixels, 1.69x faster, `12 s` in code\n"
        "```bash\nsleep 5s  # 2.0x\n```\n"
    )
    problems = quote_problems(page, tmp_path)
    assert [p.split(": ", 1)[0] for p in problems] == ["p.md:2"] * 3, problems
    assert "wrote 23.5" in problems[0] and "'hurts'" in problems[1] and "has no a.x" in problems[2]
    assert [p.split(": ", 1)[1] for p in unmarked_measurements(page, tmp_path)] == [
        "'3.4 s' has no source marker",
        "'1.69x' has no source marker",
    ]


# --- the stage table ----------------------------------------------------------------------------------------


def test_the_stage_table_has_a_row_for_every_dvc_stage():
    """docs/pipeline.md's "Where is each stage" names every stage of dvc.yaml (``name@<item>`` for a foreach
    stage, e.g. ``train@<experiment>``) and no stage that is not there."""
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    text = (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")
    section = text.split("\n## Where is each stage\n", 1)[1].split("\n## ", 1)[0]
    names = [
        n for row in section.splitlines() if row.startswith("| `") for n in re.findall(r"`([^`]+)`", row.split("|")[1])
    ]
    # `validate@<suite>` is dvc.yaml's foreach stage `validate`, `train@<experiment>` its foreach stage `train`
    patterns = {n: re.compile(PLACEHOLDER.sub(".+", n.split("@")[0])) for n in names}
    missing = [s for s in stages if not any(p.fullmatch(s) for p in patterns.values())]
    assert missing == [], f"dvc.yaml stages without a row in docs/pipeline.md: {missing}"
    stale = [n for n, p in patterns.items() if not any(p.fullmatch(s) for s in stages)]
    assert stale == [], f"rows of docs/pipeline.md naming no dvc.yaml stage: {stale}"


def test_every_number_of_the_hand_kept_history_is_quoted_somewhere():
    """metrics/bench/history.json holds only what the docs quote: a measurement nobody reads is noise, and one
    written in the prose instead would be a second copy."""
    history = json.loads((ROOT / "metrics" / "bench" / "history.json").read_text())
    quoted = {
        match["key"]
        for path in documents()
        for match in MARKER.finditer(path.read_text(encoding="utf-8"))
        if match["file"] == "metrics/bench/history.json"
    }

    def leaves(value, prefix=""):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from leaves(item, f"{prefix}{key}.")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from leaves(item, f"{prefix}{index}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield prefix.rstrip(".")

    assert sorted(set(leaves(history)) - quoted) == []


# --- the stage table's code and settings columns -------------------------------------------------------------

CODE_LINK = re.compile(r"\[`([^`]+)`\]\(\.\./src/fersynth/([^)]+)\)")


def stage_rows() -> list[tuple[list[str], list[str]]]:
    """The rows of docs/pipeline.md's stage table: (the stage names of its first column, its cells)."""
    text = (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")
    section = text.split("\n## Where is each stage\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells))
    return rows


@functools.cache
def dvc_yaml_stages() -> dict[str, dict]:
    """dvc.yaml's stages as written (a ``foreach`` stage's ``do`` body in place of the stage)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def stages_of_row(names: list[str]) -> dict[str, dict]:
    """The dvc.yaml stages a row names (``validate@<suite>`` is the foreach stage ``validate``)."""
    patterns = [re.compile(PLACEHOLDER.sub(".+", name.split("@")[0])) for name in names]
    return {s: body for s, body in dvc_yaml_stages().items() if any(p.fullmatch(s) for p in patterns)}


def top_level_functions(path: Path) -> set[str]:
    """The functions a module defines at its top level, read with ast (nothing imported: no PyTorch)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def names_imported_in(function) -> set[str]:
    """The names a function's body imports (``from fersynth.x import a, b``): the workers a command calls."""
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}


def code_problems() -> list[str]:
    """Each row's code cell: `cli/<file>.py` holds the command of every stage of the row (its dvc.yaml cmd), and
    each `<room>/<module>.py:<function>` is defined in that module and imported by that command."""
    from fersynth.cli import main

    problems = []
    for names, cells in stage_rows():
        links = CODE_LINK.findall(cells[2])
        where = f"docs/pipeline.md row {names}"
        if len(links) < 2 or not re.fullmatch(r"cli/\w+\.py", links[0][0]) or links[0][0] != links[0][1]:
            problems.append(f"{where}: code is not [`cli/<file>.py`](...) -> [`<room>/<module>.py:<function>`](...)")
            continue
        cli_module = f"fersynth.cli.{Path(links[0][0]).stem}"
        commands = set()
        for stage, body in stages_of_row(names).items():
            subcommand = body["cmd"].split()[1]
            command = main.commands.get(subcommand)
            if command is None or command.callback.__module__ != cli_module:
                problems.append(f"{where}: stage {stage} runs `fersynth {subcommand}`, which is not in {links[0][0]}")
            else:
                commands.add(command)
        for text, target in links[1:]:
            module, _, function = text.partition(":")
            path = ROOT / "src" / "fersynth" / target
            if module != target or not path.is_file():
                problems.append(f"{where}: {text} does not link to src/fersynth/{module}")
            elif function not in top_level_functions(path):
                problems.append(f"{where}: src/fersynth/{module} defines no function {function!r}")
            elif not any(function in names_imported_in(command.callback) for command in commands):
                problems.append(f"{where}: the command does not import {function!r}")
    return problems


def test_the_stage_table_leads_from_each_stages_command_to_its_worker():
    assert code_problems() == []


def key_pattern(documented: str) -> re.Pattern:
    """A documented params key (``train.*.variants``, ``train.<experiment>``) as a pattern for dvc.yaml's keys
    (``train.fer2013.variants``, ``train.${key}``), which it also matches as a section of a longer key."""
    parts = [r"[^.]+" if PLACEHOLDER.fullmatch(part) else re.escape(part) for part in documented.split(".")]
    return re.compile(r"\.".join(parts) + r"(\..+)?")


def settings_problems() -> list[str]:
    """Each row's settings cell names exactly the configs files its stages depend on and covers the params keys
    they declare (``runtime``, which every stage reads, is said once below the table)."""
    problems = []
    for names, cells in stage_rows():
        stages = stages_of_row(names)
        where = f"docs/pipeline.md row {names}"
        linked = set(re.findall(r"\]\(\.\./(configs/[\w.]+\.yaml)\)", cells[3]))
        deps = {d for body in stages.values() for d in body.get("deps", []) if str(d).startswith("configs/")}
        if linked != deps:
            problems.append(f"{where}: settings link {sorted(linked)}, dvc.yaml deps are {sorted(deps)}")
        documented = [k.removeprefix("params.yaml: ") for k in re.findall(r"`([^`]+)`", cells[3])]
        params = {p for body in stages.values() for p in body.get("params", []) if isinstance(p, str)} - {"runtime"}
        for key in sorted(params):
            if not any(key_pattern(d).fullmatch(key) for d in documented):
                problems.append(f"{where}: dvc.yaml params {key} not in the settings column")
        for key in documented:
            if not any(key_pattern(key).fullmatch(p) or key_pattern(p).fullmatch(key) for p in params):
                problems.append(f"{where}: settings name {key}, which no stage of the row declares in dvc.yaml")
    return problems


def test_the_stage_table_names_each_stages_configs_files_and_params():
    assert settings_problems() == []


def test_the_table_checks_find_a_wrong_module_function_command_and_setting(monkeypatch):
    rows = stage_rows()
    names, cells = next(row for row in rows if row[0] == ["merge"])
    bad = [
        (names, cells[:2] + [cells[2].replace("cli/data.py", "cli/train.py")] + cells[3:]),
        (names, cells[:2] + [cells[2].replace("merge_variants", "merge_nothing")] + cells[3:]),
        (names, cells[:2] + [cells[2].replace("`ingest/merge.py", "`ingest/merged.py")] + cells[3:]),
        (names, cells[:3] + ["[gate.yaml](../configs/gate.yaml), `params.yaml: compare`"] + cells[4:]),
    ]
    monkeypatch.setitem(globals(), "stage_rows", lambda: bad)
    problems = code_problems() + settings_problems()
    for expected in (
        "runs `fersynth merge`, which is not in cli/train.py",
        "defines no function 'merge_nothing'",
        "does not link to src/fersynth/ingest/merged.py",
        "dvc.yaml deps are ['configs/merge.yaml']",
        "settings name compare, which no stage",
    ):
        assert any(expected in p for p in problems), (expected, problems)


# --- the commands table and the cli/ files ------------------------------------------------------------------


def command_rows() -> list[tuple[str, str]]:
    """docs/pipeline.md's commands table: (each `fersynth ...` usage of the first column, the whole row)."""
    text = (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    return [
        (usage, row)
        for row in section.splitlines()
        if row.startswith("| `fersynth ")
        for usage in re.findall(r"`(fersynth [^`]+)`", re.split(r"(?<!\\)\|", row)[1])
    ]


def click_command(words: list[str]):
    """The click command that ``fersynth WORDS...`` runs (``mlflow-server start``: a group's command)."""
    from fersynth.cli import main

    command = main
    for word in words:
        if not hasattr(command, "commands") or word not in command.commands:
            break
        command = command.commands[word]
    return command


def option_names(command) -> set[str]:
    return {name for param in command.params for name in param.opts if name.startswith("--")}


def test_the_commands_table_names_only_real_options_and_every_option_the_pipeline_uses():
    documented: dict[str, set[str]] = {}
    for usage, _ in command_rows():
        command = click_command(usage.split()[1:3])
        written = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", usage))
        assert written <= option_names(command), f"`{usage}`: no such option {written - option_names(command)}"
        documented.setdefault(command.name, set()).update(written)
    used = [body["cmd"] for body in dvc_yaml_stages().values()]
    used += re.findall(r"\$\(BIN\)/(fersynth .*)", (ROOT / "Makefile").read_text())
    for cmd in used:
        words = cmd.replace("$(BIN)/", "").split(" -- ")[0].split()
        command = click_command(words[1:3])
        options = {w.split("=")[0] for w in words if w.startswith("--")}
        missing = options - documented.get(command.name, set())
        assert not missing, f"`{cmd}` uses {sorted(missing)}, not in docs/pipeline.md's row of `{command.name}`"


def test_development_md_lists_every_command_under_its_cli_file():
    from fersynth.cli import main

    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    listed = {}
    for module, commands in re.findall(r"^\| `src/fersynth/cli/(\w+)\.py` \| (.*) \|$", text, re.M):
        for name in re.findall(r"`([a-z][\w-]*)[^`]*`", commands):  # `mlflow-server start`: the group
            listed[name] = f"fersynth.cli.{module}"
    actual = {name: command.callback.__module__ for name, command in main.commands.items()}
    assert {name: listed.get(name) for name in actual} == actual
