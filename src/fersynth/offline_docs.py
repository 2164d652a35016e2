"""Data Docs that render without internet.

Great Expectations' Data Docs load jQuery, Bootstrap, bootstrap-table, Font Awesome and more from CDNs; on
an offline machine the index page is blank (its tables are drawn by bootstrap-table) and the validation
pages lose their layout and status icons. :func:`make_offline` copies the vendored files
(``static/datadocs``: the same versions, from their npm packages, licenses in ``LICENSES.txt``) into a
built site and points every page at them by relative paths. Vega (charts; no fersynth suite draws one) and
the dark-mode stylesheet are dropped rather than vendored; the GX logo comes from the site's own images.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

VENDOR = Path(__file__).parent / "static" / "datadocs"
SITE_VENDOR = Path("static") / "vendor"

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


def make_offline(site: Path) -> list[str]:
    """Vendor the assets into ``site`` and rewrite its pages; the external URLs its pages would still
    fetch (none with the GX version fersynth pins; a new one shows up here and in the stage's log)."""
    site = Path(site)
    shutil.copytree(VENDOR, site / SITE_VENDOR, ignore=shutil.ignore_patterns("*.txt", "SHA256SUMS"))
    remaining: set[str] = set()
    for page in site.rglob("*.html"):
        root = Path(os.path.relpath(site, page.parent))
        text = _DROPPED.sub("", page.read_text(encoding="utf-8"))
        for url, local in ASSETS.items():
            text = text.replace(url, (root / SITE_VENDOR / local).as_posix())
        text = _LOGO.sub((root / "static" / "images" / "logo-long.png").as_posix(), text)
        page.write_text(text, encoding="utf-8")
        remaining.update(a or b for a, b in _FETCHED.findall(text))
    return sorted(remaining)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_WALL_CLOCK = re.compile(r"\b(?!20000101T)\d{8}T\d{6}\.\d{6}Z\b")  # GX's ge_load_time (run ids are pinned)


def make_reproducible(site: Path) -> int:
    """Pin what GX draws anew on every build, so that the site is the same bytes every run (it is a DVC
    output): each page's random element ids (uuid4, used to link a collapse button to its body) become
    ids derived from the page's path and their order on it, and the batch's load time (the wall clock) is
    replaced by ``not recorded``. Run times are pinned at validation (``fersynth.validate``). Returns the
    number of values replaced."""
    site = Path(site)
    replaced = 0
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(site).as_posix()
        ids: dict[str, str] = {}
        for found in _UUID.findall(text):
            ids.setdefault(found, str(uuid.uuid5(uuid.NAMESPACE_URL, f"fersynth-data-docs/{name}#{len(ids)}")))
        for old, new in ids.items():
            text = text.replace(old, new)
        text, stamps = _WALL_CLOCK.subn("not recorded", text)
        replaced += len(ids) + stamps
        page.write_text(text, encoding="utf-8")
    return replaced
