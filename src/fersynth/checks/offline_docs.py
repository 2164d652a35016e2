"""Data Docs that render without internet, from ``file://``, with no console error.

Great Expectations' Data Docs load jQuery, Bootstrap, bootstrap-table, Font Awesome and more from CDNs; on
an offline machine the index page is blank (its tables are drawn by bootstrap-table) and the validation
pages lose their layout and status icons. :func:`make_offline` points every page at the vendored files
(``static/datadocs``: the same versions, from their npm packages, licenses in ``LICENSES.txt``) by relative
paths, and :func:`copy_static` puts one copy of them (and the two GX images the pages show) into the site.
Vega (charts; no fersynth suite draws one) and the dark-mode stylesheet are dropped rather than vendored;
the GX logo comes from the site's own images. GX marks Popper and Bootstrap ``crossorigin`` with an
``integrity`` hash: from ``file://`` Chromium refuses such a script (a CORS request from origin ``null``),
so those two attributes go from every local script and stylesheet (``SHA256SUMS`` pins the vendored bytes).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

VENDOR = Path(__file__).parent / "static" / "datadocs"
SITE_VENDOR = Path("static") / "vendor"
GX_IMAGES = ("favicon.ico", "logo-long.png")  # of GX's static/images, the only files its pages show

ASSETS = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "js/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "js/popper.min.js",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "js/bootstrap.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "css/bootstrap.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "js/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "css/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "js/bootstrap-table-filter-control.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "css/bootstrap-table-filter-control.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (
        "css/bootstrap-table-filter-control.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "css/bootstrap-table-filter-control.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "css/all.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "js/bootstrap-datepicker.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "css/bootstrap-datepicker.min.css"
    ),
}
"""What GX 1.x links from CDNs -> the vendored copy (under ``static/datadocs``)."""

_DROPPED = re.compile(
    r'<script[^>]*\ssrc="https://cdn\.jsdelivr\.net/npm/vega[^"]*"[^>]*>\s*</script>\s*'
    r'|<link[^>]*\shref="https://cdn\.jsdelivr\.net/npm/@forevolve/bootstrap-dark[^"]*"[^>]*>\s*'
)
_LOGO = re.compile(r'https://great-expectations-web-assets\.s3\.[^"\']*\.png[^"\']*')
_FETCHED = re.compile(r'<(?:script|img)[^>]*\ssrc="(https?://[^"]+)"|<link[^>]*\shref="(https?://[^"]+)"')
# A page's own way up to the site's static/ (GX computes the favicon's one level short on validation pages)
_STATIC = re.compile(r"""(?<=["'(])(?:\./|(?:\.\./)+)?static/""")
_LOCAL_TAG = re.compile(r"""<(?:script|link)\b(?![^>]*\s(?:src|href)=["']https?:)[^>]*>""")
_CORS_ATTRIBUTES = re.compile(r"""\s(?:integrity|crossorigin)(?:=(?:"[^"]*"|'[^']*'|[^\s>]+))?""")
_LOCAL_REFERENCE = re.compile(r"""(?:\s(?:src|href)=["']|url\(['"]?)(?!https?:|#|data:|mailto:)([^"')\s]+)""")


def make_offline(site: Path, pages: Iterable[Path] | None = None) -> list[str]:
    """Rewrite ``pages`` (default: every page under ``site``, the directory their links are relative to)
    to the site's local static files; the external URLs they would still fetch (none with the GX version
    fersynth pins; a new one shows up here and in the stage's log)."""
    site = Path(site)
    remaining: set[str] = set()
    for page in sorted(site.rglob("*.html") if pages is None else pages):
        text = offline_page(page.read_text(encoding="utf-8"), Path(os.path.relpath(site, page.parent)))
        page.write_text(text, encoding="utf-8")
        remaining.update(a or b for a, b in _FETCHED.findall(text))
    return sorted(remaining)


def offline_page(text: str, root: Path) -> str:
    """One page's HTML with CDN links replaced by ``root`` (the way up to the site root) + the vendored copy."""
    text = _DROPPED.sub("", text)
    for url, local in ASSETS.items():
        text = text.replace(url, (root / SITE_VENDOR / local).as_posix())
    text = _LOGO.sub((root / "static" / "images" / "logo-long.png").as_posix(), text)
    text = _STATIC.sub((root / "static").as_posix() + "/", text)
    return _LOCAL_TAG.sub(lambda tag: _CORS_ATTRIBUTES.sub("", tag.group(0)), text)


def copy_static(static: Path) -> None:
    """One copy of what the pages load, into a site's ``static`` folder: the vendored files and GX's
    favicon and logo (the other 4 MB of GX's static folder, fonts and tutorial images, no page loads)."""
    import great_expectations.render.view as gx_view  # GX ships its images beside its page templates

    static = Path(static)
    shutil.copytree(VENDOR, static / SITE_VENDOR.name, ignore=shutil.ignore_patterns("*.txt", "SHA256SUMS"))
    (static / "images").mkdir(parents=True, exist_ok=True)
    for name in GX_IMAGES:
        shutil.copyfile(Path(gx_view.__file__).parent / "static" / "images" / name, static / "images" / name)


def missing_references(site: Path, pages: Iterable[Path] | None = None) -> list[str]:
    """``page -> target`` for every relative src, href or url() of ``pages`` (default: every page under
    ``site``) that names no file (links that open a directory or carry a query are not expected in Data Docs
    and count as missing)."""
    site = Path(site)
    missing = []
    for page in sorted(site.rglob("*.html")) if pages is None else pages:
        for target in sorted(set(_LOCAL_REFERENCE.findall(page.read_text(encoding="utf-8")))):
            if "${" in target or "{{" in target or target.startswith(("javascript:", "//")):
                continue  # template strings of GX's own scripts, not files
            if not (page.parent / unquote(target)).is_file():
                missing.append(f"{page.relative_to(site).as_posix()} -> {target}")
    return missing


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_WALL_CLOCK = re.compile(r"\b(?!20000101T)\d{8}T\d{6}\.\d{6}Z\b")  # GX's ge_load_time (run times are pinned)


def make_reproducible(site: Path) -> int:
    """Pin what GX draws anew on every build in every page under ``site`` (:func:`reproducible_page`), so
    that the site is the same bytes every run (it is a DVC output). Returns the number of values replaced."""
    site = Path(site)
    replaced = 0
    for page in sorted(site.rglob("*.html")):
        text, count = reproducible_page(page.read_text(encoding="utf-8"), page.relative_to(site).as_posix())
        replaced += count
        page.write_text(text, encoding="utf-8")
    return replaced


def reproducible_page(text: str, name: str) -> tuple[str, int]:
    """The page ``name`` (its path in the site) with its random element ids (uuid4, linking a collapse button
    to its body) replaced by ids derived from ``name`` and their order on it, and the batch's load time (the
    wall clock) by ``not recorded``; and how many values were replaced. Run times are pinned at validation
    (:func:`fersynth.checks.data_docs.run_identity`)."""
    ids: dict[str, str] = {}
    for found in _UUID.findall(text):
        ids.setdefault(found, str(uuid.uuid5(uuid.NAMESPACE_URL, f"fersynth-data-docs/{name}#{len(ids)}")))
    for old, new in ids.items():
        text = text.replace(old, new)
    text, stamps = _WALL_CLOCK.subn("not recorded", text)
    return text, len(ids) + stamps
