"""One Great Expectations Data Docs site for every suite (``reports/data_docs``).

Each ``validate`` stage is its own DVC stage with its own outputs, so no stage may write the whole site:
:func:`publish_suite` moves one suite's pages (``validations/<suite>``, ``expectations/<suite>``) out of a
private GX build into the site and leaves its rows of the index beside them; :func:`build_site` (the
``data-docs`` stage, after every suite) writes the index of all suites and the one copy of the static files.
Every byte is a function of the validated data: run names come from the manifest's hash, run times are
fixed (:func:`run_identity`), element ids are derived (:func:`fersynth.checks.offline_docs.make_reproducible`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote

from fersynth.atomic import atomic_path, write_json
from fersynth.checks.offline_docs import copy_static, missing_references, offline_page, reproducible_page
from fersynth.errors import InputError
from fersynth.log import get_logger
from fersynth.paths import DataDocsLayout
from fersynth.variants.files import MAX_JSON_BYTES, MAX_MANIFEST_BYTES, file_sha256, read_bounded

log = get_logger(__name__)

SITE_NAME = "fersynth"
RUN_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class BrokenDataDocs(InputError):
    """The site links to a page or file it does not hold (a suite's pages missing, or a GX layout change)."""


def run_identity(manifest: Path, position: int):
    """The run of a suite's ``position``-th batch: named for the manifest it checked (the first 12 hex digits
    of its SHA-256, so the index says which data each validation saw) and dated ``RUN_EPOCH + position``
    seconds, so a suite's batches keep the order they were checked in. GX's default (the wall clock and a
    random name) changed the pages' bytes and paths on every run: the site is a DVC output."""
    from great_expectations.core.run_identifier import RunIdentifier

    digest = file_sha256(Path(manifest), MAX_MANIFEST_BYTES, "manifest")[:12]
    return RunIdentifier(run_name=f"manifest-{digest}", run_time=RUN_EPOCH + timedelta(seconds=position))


def index_entry(identifier, result) -> dict:
    """One row of the site index for a validation result, in GX's own index-links shape (the fields
    ``DefaultSiteIndexBuilder`` collects), with the run time as ISO text so it can be stored as JSON."""
    suite = identifier.expectation_suite_identifier.name
    run = identifier.run_id
    page = Path("validations", *suite.split("."), *run.to_tuple(), identifier.batch_identifier).as_posix()
    spec = result.meta.get("batch_spec") or {}
    return {
        "expectation_suite_name": suite,
        "filepath": quote(page + ".html"),
        "expectation_suite_filepath": Path("expectations", *suite.split(".")).as_posix() + ".html",
        "batch_identifier": identifier.batch_identifier,
        "run_name": run.run_name,
        "run_time": run.run_time.isoformat(),
        "validation_success": bool(result.success),
        "asset_name": result.asset_name,
        "batch_spec": {str(k): str(v) for k, v in dict(spec).items()},
    }


def publish_suite(built: Path, site: Path, suite: str, entries: list[dict]) -> None:
    """Move ``suite``'s pages from the GX build in ``built`` into ``site`` (each folder swapped in whole,
    replacing the suite's previous validation) with ``entries``, its rows of the site index."""
    source, target = DataDocsLayout(Path(built)), DataDocsLayout(Path(site))
    absent = [e["filepath"] for e in entries if not (Path(built) / unquote(e["filepath"])).is_file()]
    if absent:
        raise BrokenDataDocs(f"{suite}: GX wrote no page at {', '.join(absent)} (a new GX page layout?)")
    with atomic_path(target.validations(suite), kind="docs") as staged:
        shutil.copytree(source.validations(suite), staged)
        write_json(staged / target.entries(suite).name, entries)
    with atomic_path(target.expectations(suite), kind="docs") as staged:
        shutil.copytree(source.expectations(suite), staged)


ENTRY_FIELDS = frozenset(
    {"expectation_suite_name", "filepath", "expectation_suite_filepath", "batch_identifier", "run_name", "run_time"}
    | {"validation_success", "asset_name"}
)


def read_entries(site: Path) -> dict[str, list[dict]]:
    """Suite -> its index rows, for every suite whose pages are in ``site``, by suite name; a rows file that
    `fersynth validate` did not write (unreadable, another shape) is a :class:`BrokenDataDocs`."""
    layout = DataDocsLayout(Path(site))
    if not layout.validations_dir.is_dir():
        return {}
    suites = sorted(p.name for p in layout.validations_dir.iterdir() if layout.entries(p.name).is_file())
    return {suite: _rows(layout.entries(suite), suite) for suite in suites}


def _rows(path: Path, suite: str) -> list[dict]:
    try:
        rows = json.loads(read_bounded(path, MAX_JSON_BYTES))  # FileRejected (a FIFO, 2 GB): a ValueError
        if not isinstance(rows, list) or not all(isinstance(r, dict) and ENTRY_FIELDS <= r.keys() for r in rows):
            raise ValueError(f"not a list of rows with {sorted(ENTRY_FIELDS)}")
        for row in rows:
            datetime.fromisoformat(row["run_time"])
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as error:
        reason = str(error).splitlines()[0]
        raise BrokenDataDocs(f"{path}: {reason}; rerun `fersynth validate` for suite {suite}") from error
    return rows


def build_site(site: Path) -> dict:
    """Write ``site``'s index of every published suite and its static files; raise :class:`BrokenDataDocs`
    when the index or a suite's page links to a file that is not there (folders the index does not list,
    such as the per-suite sites of fersynth before issue 21, are not looked at). Returns what the index lists."""
    layout = DataDocsLayout(Path(site))
    suites = read_entries(site)
    if not suites:
        log.warning("data docs: no suite's pages in %s (run `fersynth validate` first); the index lists none", site)
    with atomic_path(layout.static, kind="docs") as staged:
        copy_static(staged)
    html = render_index([entry for rows in suites.values() for entry in rows])
    html, _ = reproducible_page(offline_page(html, Path(".")), layout.index.name)
    with atomic_path(layout.index) as staged:
        staged.write_text(html, encoding="utf-8")
    pages = [layout.index] + [
        page
        for suite in suites
        for folder in (layout.validations(suite), layout.expectations(suite))
        for page in sorted(folder.rglob("*.html"))
    ]
    broken = missing_references(Path(site), pages)
    if broken:
        raise BrokenDataDocs(f"{len(broken)} broken link(s) in {site}: {'; '.join(broken[:5])}")
    failed = [suite for suite, rows in suites.items() if not all(row["validation_success"] for row in rows)]
    log.info(
        "data docs: %d suites, %d validations (%d suites failing) -> %s",
        len(suites),
        sum(map(len, suites.values())),
        len(failed),
        layout.index,
    )
    return {"suites": list(suites), "validations": sum(len(rows) for rows in suites.values()), "failing": failed}


def render_index(entries: Iterable[dict]) -> str:
    """The index page (GX's renderer and template) listing ``entries`` by suite name, all on one page,
    without GX's 'how to' buttons (links to its web site)."""
    from great_expectations.render.view import DefaultJinjaIndexPageView

    entries = list(entries)
    links = {
        "site_name": SITE_NAME,
        "validations_links": [entry | {"run_time": datetime.fromisoformat(entry["run_time"])} for entry in entries],
        "expectations_links": [
            {"expectation_suite_name": e["expectation_suite_name"], "filepath": quote(e["expectation_suite_filepath"])}
            for e in entries
        ],
    }
    document = _index_renderer().render(links)
    if document is None:  # GX logs the exception and returns nothing
        raise BrokenDataDocs("GX could not render the Data Docs index (see the log above)")
    return DefaultJinjaIndexPageView().render(document, data_context_id=None, show_how_to_buttons=False)


def _index_renderer():
    """GX's index renderer, its validation table sorted by suite (GX sorts by run time, which is fixed
    here) and unpaged: every suite's latest validation on one page."""
    from great_expectations.render.renderer import SiteIndexPageRenderer

    class SuiteOrderedIndex(SiteIndexPageRenderer):
        @classmethod
        def _generate_validation_results_link_table(cls, index_links_dict):
            table = super()._generate_validation_results_link_table(index_links_dict)
            table.table_options |= {"sortName": "expectation_suite_name", "sortOrder": "asc"}
            table.table_options.pop("pagination", None)  # GX writes options as text: "false" would be truthy JS
            return table

        @classmethod
        def _generate_expectation_suites_link_table(cls, index_links_dict):
            table = super()._generate_expectation_suites_link_table(index_links_dict)
            table.table_options.pop("pagination", None)
            return table

    return SuiteOrderedIndex
