"""The one Data Docs site (`fersynth.checks.data_docs`, `fersynth.checks.offline_docs`): several suites' pages in one
site with one index and one copy of the static files, every link resolving, and pages that open from
``file://`` in a Chromium that resolves no host name without a single console error."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fersynth.checks.data_docs import BrokenDataDocs, build_site, publish_suite, read_entries
from fersynth.checks.validate import SuiteConfig, ValidationFailed, validate_variant
from fersynth.cli import main
from tests.browser import chromium_page
from tests.conftest import validate_project
from tests.test_validate import GOOD, _variant

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Two suites in one site, one of them failing (a subject on two sides), and the index over both."""
    root = tmp_path_factory.mktemp("docs")
    site = root / "site"
    validate_variant(_variant(root / "good", GOOD), SuiteConfig(min_per_class=0), root / "good.json", site)
    leaky = [*GOOD[:-1], ("leak", "test", "happy", 3, "s0", 99)]
    with pytest.raises(ValidationFailed):
        validate_variant(
            _variant(root / "leaky", leaky), SuiteConfig(min_per_class=0, subjects_disjoint=True), root / "b.json", site
        )
    build_site(site)
    return site


SUITES = [  # the index's validations, by suite
    "good.integrity",
    "good.manifest",
    "good.sha256_splits",
    "leaky.integrity",
    "leaky.manifest",
    "leaky.sha256_splits",
    "leaky.subject_splits",
]


def test_one_site_lists_every_suite_with_one_copy_of_the_static_files(site):
    assert sorted(p.name for p in site.iterdir()) == ["expectations", "index.html", "static", "validations"]
    assert sorted(read_entries(site)) == ["good", "leaky"]
    index = (site / "index.html").read_text()
    rows = re.findall(
        r"'_expectation_suite_name_sort': '([^']+)', '_table_row_link_path': '([^']+)', "
        r"'_validation_success_text': '(\w+)'",
        index,
    )  # GX's row data, as bootstrap-table gets it
    assert sorted(suite for suite, _, _ in rows) == SUITES
    assert [suite for suite, _, status in rows if status == "Failed"] == ["leaky.subject_splits"]
    assert all((site / page).is_file() for _, page, _ in rows)
    assert len(list(site.rglob("jquery.min.js"))) == 1  # one copy, not one per suite


def test_every_page_loads_only_local_files_without_cors_attributes(site):
    """From file:// Chromium refuses a script marked crossorigin (a CORS request from origin null), and an
    integrity hash needs CORS: GX put both on Popper and Bootstrap, which then never ran."""
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 1 + 7 + 7  # the index, a page per validation and one per expectation suite
    for page in pages:
        text = page.read_text()
        assert not re.search(r'<(?:script|img)[^>]*\ssrc="https?://|<link[^>]*\shref="https?://', text), page
        assert not re.search(r"\s(?:crossorigin|integrity)=", text), page
        for local in re.findall(r'(?:src|href)="((?:\.\./)*(?:\./)?static/[^"]+)"', text):
            assert (page.parent / local).is_file(), (page, local)


def test_a_missing_suite_page_fails_the_site_build_in_one_line(site, tmp_path):
    import shutil

    broken = tmp_path / "site"
    shutil.copytree(site, broken)
    shutil.rmtree(broken / "expectations" / "good")
    with pytest.raises(BrokenDataDocs, match=r"broken link\(s\).*expectations/good/"):
        build_site(broken)
    done = CliRunner().invoke(main, ["data-docs", "--site", str(broken)])
    assert done.exit_code == 1 and "Traceback" not in done.output
    assert done.output.startswith("fersynth data-docs: error: ") and len(done.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "rows",
    ["{not json", "{}", '[{"filepath": "x.html"}]', "\xff\xfe", None],
    ids=["json", "dict", "keys", "bytes", "time"],
)
def test_a_damaged_rows_file_is_one_line_naming_the_suite(site, tmp_path, rows):
    import shutil

    damaged = tmp_path / "site"
    shutil.copytree(site, damaged)
    target = damaged / "validations" / "good" / "index-entries.json"
    if rows is None:  # the right shape, a run time that is no time
        rows = json.dumps([e | {"run_time": 946684800} for e in json.loads(target.read_text())])
    target.write_bytes(rows.encode("latin-1"))
    done = CliRunner().invoke(main, ["data-docs", "--site", str(damaged)])
    assert done.exit_code == 1 and "Traceback" not in done.output and len(done.output.strip().splitlines()) == 1
    assert "rerun `fersynth validate` for suite good" in done.output


def test_a_page_gx_did_not_write_is_refused_before_publishing(tmp_path):
    (tmp_path / "built" / "validations" / "toy").mkdir(parents=True)
    (tmp_path / "built" / "expectations" / "toy").mkdir(parents=True)
    entry = {"filepath": "validations/toy/manifest/run/20000101T000000.000000Z/toy_source-manifest.html"}
    with pytest.raises(BrokenDataDocs, match="a new GX page layout"):
        publish_suite(tmp_path / "built", tmp_path / "site", "toy", [entry])
    assert not (tmp_path / "site").exists()


def test_revalidating_a_suite_replaces_its_pages(tmp_path):
    """A suite's folder holds its latest validation only: a run of other data leaves no stale page (run
    names carry the manifest's hash, so the old run's pages would otherwise linger)."""
    site = tmp_path / "site"
    validate_variant(_variant(tmp_path / "toy", GOOD), SuiteConfig(min_per_class=0), tmp_path / "q.json", site)
    first = sorted(p.relative_to(site) for p in (site / "validations").rglob("*.html"))
    validate_variant(_variant(tmp_path / "toy", GOOD[:-1]), SuiteConfig(min_per_class=0), tmp_path / "q.json", site)
    second = sorted(p.relative_to(site) for p in (site / "validations").rglob("*.html"))
    assert len(first) == len(second) == 3 and not set(first) & set(second)
    assert all((site / e["filepath"]).is_file() for e in read_entries(site)["toy"])


async def _open_offline(chromium: str, profile: Path, pages: list[tuple[str, str]]) -> list[tuple[list[str], object]]:
    """Open each (url, ready) in one offline Chromium; per page every console error or warning, uncaught
    exception and failed load, and the value of ``ready`` (a JS expression waited for)."""
    opened = []
    async with chromium_page(chromium, profile, offline=True) as page:
        for url, ready in pages:
            value = await page.open(url, ready, seconds=60)
            opened.append((page.errors + page.warnings, value))
    return opened


def test_the_site_opens_offline_in_chromium_without_a_console_error(site, tmp_path, chromium):
    validation = next((site / "validations" / "leaky" / "subject_splits").rglob("*.html"))
    # bootstrap-table drew the index's rows (jQuery, Popper, Bootstrap and the plugin all ran): every
    # suite's validations on one page, by suite
    table = "$('.ge-index-page-validation-results-table')"
    drawn = (
        f"{table}.find('tbody tr[data-index]').length && JSON.stringify([{table}.bootstrapTable('getOptions')"
        f".pagination, {table}.find('tbody tr[data-index] td:last-child').map((i, c) => c.innerText.trim()).get()])"
    )
    # Bootstrap's collapse plugin is there (a validation page's sections fold with it)
    collapse = "typeof jQuery !== 'undefined' && typeof jQuery.fn.collapse === 'function'"
    index, page, suite = asyncio.run(
        _open_offline(
            chromium,
            tmp_path / "profile",
            [
                ((site / "index.html").as_uri(), drawn),
                (validation.as_uri(), collapse),
                ((site / "expectations" / "good" / "manifest.html").as_uri(), collapse),
            ],
        )
    )
    problems, drawn = index
    assert problems == [] and json.loads(drawn) == [False, SUITES]
    assert page == ([], True) and suite == ([], True)


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("DVC_ROOT", None)
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def test_dvc_assembles_one_site_and_a_rerun_by_hand_leaves_status_clean(tmp_path):
    """The real `validate` and `data-docs` stages of dvc.yaml (source deps dropped) in a tiny project: each
    suite's stage writes its own pages, `data-docs` the index of both; then `fersynth validate` and
    `fersynth data-docs` by hand (docs/sharing.md's advice after a pull) change no byte DVC tracks."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    validate, site = stages["validate"], stages["data-docs"]
    for stage in (validate["do"], site):
        stage["deps"] = [d for d in stage["deps"] if not d.startswith("src/")]
    suites = {
        "toy": {"variant": "data/original/toy", "min_per_class": 0, "max_class_ratio": 1},
        "filtered_toy": {"variant": "data/filtered/toy", "min_per_class": 0, "max_class_ratio": 1.5},
    }
    validate_project(tmp_path, {"validate": validate, "data-docs": site}, suites)
    _variant(tmp_path / "data" / "original" / "toy", GOOD)
    _variant(tmp_path / "data" / "filtered" / "toy", GOOD[:-1])  # one happy face filtered out: 6 vs 5
    assert _dvc(tmp_path, "init", "--no-scm", "-q").returncode == 0
    done = _dvc(tmp_path, "repro")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(read_entries(tmp_path / "reports" / "data_docs")) == ["filtered_toy", "toy"]
    index = (tmp_path / "reports" / "data_docs" / "index.html").read_text()
    assert "toy.class_balance" in index and "filtered_toy.class_balance" in index
    # by hand, as docs/sharing.md advises after a pull: the filtered variant is checked as its own suite, not as
    # `toy` (its directory's name), and every output keeps its bytes
    for command in (["validate", "data/filtered/toy"], ["data-docs"]):
        by_hand = subprocess.run(
            [sys.executable, "-m", "fersynth.cli", *command], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert by_hand.returncode == 0, by_hand.stderr
    status = _dvc(tmp_path, "status")
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
