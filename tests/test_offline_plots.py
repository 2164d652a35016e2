import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fersynth.report.offline_plots import TITLE, page_template
from tests.browser import chromium_page

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".dvc" / "offline_plots.html"


def _library(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name / "package" / "build" / f"{name}.min.js"
    path.parent.mkdir(parents=True)
    path.write_text(code + "\n//# sourceMappingURL=x.min.js.map\n")
    (path.parent.parent / "package.json").write_text(json.dumps({"version": "9.9.9"}))
    return path


def test_the_template_inlines_the_libraries_in_load_order_for_dvc(tmp_path):
    libs = [_library(tmp_path, n, f"var {n.replace('-', '_')} = 1;") for n in ("vega", "vega-lite", "vega-embed")]
    page = page_template(*libs)
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page  # DVC adds its CDN tags only at {scripts}
    assert page.index("var vega = 1") < page.index("var vega_lite = 1") < page.index("var vega_embed = 1")
    assert "sourceMappingURL" not in page and "vega-lite: 9.9.9" in page


def test_plots_template_recognises_the_pages_it_writes_and_no_other(tmp_path):
    # how `fersynth plots-template` knows it may replace the committed template inside .dvc/: by the page's title
    from fersynth.cli.ops import is_plots_template

    libs = [_library(tmp_path, n, "var x = 1;") for n in ("vega", "vega-lite", "vega-embed")]
    page = tmp_path / "page.html"
    page.write_text(page_template(*libs))
    assert is_plots_template(page) and is_plots_template(TEMPLATE)
    other = tmp_path / "other.html"
    other.write_text(page.read_text().replace(TITLE, "my own page"))
    link = tmp_path / "link.html"
    link.symlink_to(page)
    assert not is_plots_template(other) and not is_plots_template(link) and not is_plots_template(tmp_path)


@pytest.mark.parametrize("code", ["a = '</script>';", "a = '{plot_divs}';"])
def test_a_library_that_would_break_the_page_is_refused(tmp_path, code):
    libs = [_library(tmp_path, n, code if n == "vega" else "ok();") for n in ("vega", "vega-lite", "vega-embed")]
    with pytest.raises(ValueError, match="vega.min.js"):
        page_template(*libs)


def test_the_committed_template_is_what_dvc_uses_and_fetches_nothing():
    config = (ROOT / ".dvc" / "config").read_text()
    assert re.search(r"^\[plots\]\s*\n\s*html_template = offline_plots.html$", config, re.MULTILINE)
    page = TEMPLATE.read_text()
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?https?:""", page)
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page


def _dvc(*args: str, cwd: Path) -> str:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_targeted_plot_keeps_its_template_and_fields():
    """`dvc plots show metrics/compare/sweep.json` once drew the string `verdict` on y."""
    shown = json.loads(_dvc("plots", "show", "--json", "metrics/compare/sweep.json", cwd=ROOT))
    (plot,) = shown["data"]["metrics/compare/sweep.json"]
    y_fields = set(_encoded_fields(plot["content"], "y"))
    assert "difference" in y_fields and "verdict" not in y_fields, y_fields
    assert set(_encoded_fields(plot["content"], "x")) == {"synthetic_train"}
    assert plot["content"]["title"]["text"].startswith("Sweep")


def _encoded_fields(spec, channel: str):
    """Every field a spec (with its layers) encodes on ``channel``."""
    if isinstance(spec, dict):
        encoding = spec.get("encoding", {})
        if isinstance(encoding.get(channel), dict) and "field" in encoding[channel]:
            yield encoding[channel]["field"]
        for value in spec.values():
            yield from _encoded_fields(value, channel)
    elif isinstance(spec, list):
        for value in spec:
            yield from _encoded_fields(value, channel)


DRAWN = """
(() => {
  const divs = [...document.querySelectorAll('body > div[id]')];
  return divs.map(d => {
    const canvas = d.querySelector('canvas');
    let inked = 0;
    if (canvas && canvas.width && canvas.height) {
      const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 0; i < pixels.length; i += 4) {
        if (pixels[i + 3] > 0 && pixels[i] + pixels[i + 1] + pixels[i + 2] < 600) inked++;
      }
    }
    const svgMarks = d.querySelectorAll('svg .mark-rect path, svg .mark-line path, svg .mark-symbol path').length;
    return {id: d.id, inked: inked + svgMarks, error: !!d.querySelector('.error')};
  });
})()
"""


async def _render(chromium: str, page_path: Path, profile: Path) -> dict:
    async with chromium_page(chromium, profile) as page:
        await page.call("Page.navigate", url=page_path.as_uri())
        await page.until("document.readyState === 'complete'")
        total = await page.evaluate("document.querySelectorAll('body > div[id]').length")
        await page.until(f"document.querySelectorAll('body > div[id] canvas, body > div[id] svg').length >= {total}")
        await asyncio.sleep(1)  # vega draws asynchronously after the canvas exists
        return {
            "plots": await page.evaluate(DRAWN),
            "fetched": await page.evaluate(
                "performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith('file:'))"
            ),
            "links": await page.evaluate("document.querySelectorAll('#contents a').length"),
            "errors": page.errors,
        }


def test_dvc_plots_show_renders_offline_with_marks_drawn(chromium, tmp_path):
    """The repository's own `dvc plots show` (its committed metrics) opened offline in Chromium: every plot is
    drawn (inked pixels), nothing is fetched, no console error, the answer first."""
    _dvc("plots", "show", "-o", str(tmp_path / "plots"), cwd=ROOT)
    shown = asyncio.run(_render(chromium, tmp_path / "plots" / "index.html", tmp_path / "profile"))
    assert shown["errors"] == [] and shown["fetched"] == []
    plots = shown["plots"]
    ids = [p["id"] for p in plots]
    assert ids[:2] == ["metrics_compare_differences_json", "metrics_compare_sweep_json"]
    assert any("confusion" in i for i in ids) and any(i.startswith("Learning_curves") for i in ids)
    blank = [p["id"] for p in plots if p["inked"] < 50 or p["error"]]
    assert blank == [], f"{len(blank)} of {len(plots)} plots drew nothing: {blank[:5]}"
    assert shown["links"] == len(plots)
