"""``dvc plots show`` pages that render without internet.

DVC's page loads Vega, Vega-Lite and vega-embed from a CDN, so offline it is blank. DVC takes an HTML
template (``.dvc/config``: ``plots.html_template``) holding ``{plot_divs}``; when the template has no
``{scripts}`` placeholder DVC adds no CDN tags. :func:`page_template` writes such a template with the three
libraries inlined (one self-contained page, also under ``file://``). The committed template is
``.dvc/offline_plots.html``; to upgrade the libraries::

    npm pack vega@5 vega-lite@5 vega-embed@6   # then unpack each tarball
    fersynth plots-template --vega vega/package/build/vega.min.js \\
        --vega-lite vega-lite/package/build/vega-lite.min.js \\
        --vega-embed vega-embed/package/build/vega-embed.min.js --out .dvc/offline_plots.html
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fersynth.atomic import write_text
from fersynth.variants.files import MAX_JSON_BYTES, FileRejected, read_bounded

PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")  # what DVC replaces anywhere in the template
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=\S+\s*$", re.MULTILINE)
_MAX_LIBRARY_BYTES = 4 << 20  # the three minified builds are ~0.8 MB together

TITLE = "fersynth - DVC plots"  # plots-template knows its earlier output by it (fersynth.cli.ops.is_plots_template)
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>{title}</title>
<!-- {notice} -->
{libraries}
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem 2rem; }}
body > div {{ margin: 0 0 2rem 0; }}
#contents ol {{ columns: 3; font-size: 0.85rem; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>Rendered offline (Vega {versions} inlined). First the answer (the differences with their intervals, the
sweep), then learning curves and confusion matrices.</p>
<nav id="contents"></nav>
{{plot_divs}}
<script>
// The answer first: DVC writes top-level plots before stage plots, so move the comparison plots up, then list
// every plot with a link (the confusion matrices make a long page).
(function () {{
  var divs = Array.prototype.slice.call(document.querySelectorAll("body > div[id]"));
  if (!divs.length) return;
  var answer = divs.filter(function (d) {{ return d.id.indexOf("metrics_compare_") === 0; }});
  answer.forEach(function (d) {{ document.body.insertBefore(d, divs[0]); }});
  var list = document.createElement("ol");
  answer.concat(divs.filter(function (d) {{ return answer.indexOf(d) < 0; }})).forEach(function (d) {{
    var item = document.createElement("li"), link = document.createElement("a");
    link.href = "#" + d.id;
    link.textContent = d.id.replace(/_/g, " ").trim();
    item.appendChild(link);
    list.appendChild(item);
  }});
  document.getElementById("contents").appendChild(list);
}})();
</script>
</body>
</html>
"""


def library_script(path: Path) -> str:
    """One library as an inline ``<script>``: its source map comment dropped (no file to fetch), and refused
    when it would end the script element early or holds a placeholder DVC would replace inside the code."""
    path = Path(path)
    try:  # checked on the open file: a FIFO swapped in after a stat cannot hang it
        code = _SOURCE_MAP.sub("", read_bounded(path, _MAX_LIBRARY_BYTES).decode("utf-8"))
    except FileRejected as error:
        raise ValueError(f"{path}: {error}") from None
    if "</script" in code.lower():
        raise ValueError(f"{path}: contains '</script', which would end the inline script")
    found = [p for p in PLACEHOLDERS if p in code]
    if found:
        raise ValueError(f"{path}: contains {found}, which DVC would replace")
    return f"<script>\n{code.strip()}\n</script>"


def page_template(vega: Path, vega_lite: Path, vega_embed: Path) -> str:
    """The HTML template with the three libraries inlined, in load order (vega-embed needs the other two)."""
    versions = {
        name: _version(Path(p)) for name, p in (("vega", vega), ("vega-lite", vega_lite), ("vega-embed", vega_embed))
    }
    libraries = "\n".join(library_script(Path(p)) for p in (vega, vega_lite, vega_embed))
    notice = (
        "Vega, Vega-Lite and vega-embed: BSD-3-Clause, Copyright (c) the University of Washington Interactive Data Lab"
    )
    return PAGE.format(
        title=TITLE,
        notice=notice,
        libraries=libraries,
        versions=json.dumps(versions, sort_keys=True).replace('"', ""),
    )


def write_page_template(vega: Path, vega_lite: Path, vega_embed: Path, out: Path) -> Path:
    write_text(Path(out), page_template(vega, vega_lite, vega_embed))
    return Path(out)


def _version(path: Path) -> str:
    """The version from the npm package.json beside ``build/`` (``<package>/build/x.min.js``), else ``?``."""
    manifest = path.resolve().parent.parent / "package.json"
    try:
        return str(json.loads(read_bounded(manifest, MAX_JSON_BYTES)).get("version", "?"))
    except (ValueError, AttributeError):  # no package.json there (FileRejected), or not npm's
        return "?"
