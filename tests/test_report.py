import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fersynth.annotate.calibrate import CalibrateConfig
from fersynth.annotate.calibrate.agreement import calibration_metrics
from fersynth.annotate.calibrate.judges import JudgeInfo
from fersynth.report.report import ReportInputs, build_report


def _png(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 30), value, np.uint8)).save(path)


@pytest.fixture
def inputs(tmp_path):
    metrics = tmp_path / "metrics"
    (metrics / "evaluate").mkdir(parents=True)
    (metrics / "train" / "history").mkdir(parents=True)
    matrix = {
        "fer2013": {"fer2013": 0.41, "balanced_set": 0.257},
        "<b>bold</b>": {"fer2013": 0.5, "balanced_set": None},
    }
    (metrics / "evaluate" / "cross_dataset.json").write_text(json.dumps(matrix))
    (metrics / "evaluate" / "macro_f1.json").write_text(json.dumps({"fer2013": {"fer2013": 0.3, "balanced_set": 0.2}}))
    _png(metrics / "evaluate" / "cross_dataset.png")
    report = {  # keys sorted as json.dumps(sort_keys=True) writes them: the averages between classes
        "angry": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2},
        "happy": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "support": 4},
        "macro avg": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "support": 4},
        "sad": {"precision": 0.1, "recall": 0.5, "f1": 0.2, "support": 2},
        "weighted avg": {"precision": 0.4, "recall": 0.3, "f1": 0.3, "support": 8},
        "accuracy": 0.25,
        "trials": 2,
    }
    (metrics / "evaluate" / "per_class" / "fer2013").mkdir(parents=True)
    (metrics / "evaluate" / "per_class" / "fer2013" / "balanced_set.json").write_text(json.dumps(report))
    _png(metrics / "evaluate" / "confusion_figures" / "fer2013" / "balanced_set.png", 30)
    gender = {
        "per_group": {"female": 0.2, "male": 0.3},
        "per_group_ci95": {"female": [0.1, 0.3], "male": [0.2, 0.4]},
        "size": {"female": 10, "male": 12},
        "worst": "female",
        "best": "male",
        "gap": 0.1,
        "gap_ci95": [-0.05, 0.25],
    }
    fairness = {"fer2013": {"gender": gender}}
    (metrics / "evaluate" / "fairness.json").write_text(json.dumps(fairness))
    (metrics / "evaluate" / "robustness.json").write_text(json.dumps({"fer2013": {"fer2013": {"noise_25": 0.33}}}))
    compare = {
        "fer2013_sdxl_vs_fer2013": {
            "balanced_set": {
                "images": 840,
                "seeds": 5,
                "trials": [5, 5],
                "accuracy": 0.30,
                "baseline_accuracy": 0.257,
                "difference": 0.043,
                "difference_low": 0.01,
                "difference_high": 0.07,
                "p_value": 0.0001,
                "p_holm": 0.0004,
                "mde": 0.021,
                "verdict": "helps",
                "macro_f1": 0.28,
                "baseline_macro_f1": 0.2,
                "f1_difference": {"disgust": 0.12},
                "class_difference": {"disgust": {"images": 120, "difference": 0.09, "low": 0.02, "high": 0.16}},
                "group_difference": {
                    "ethnicity": {"black": {"images": 168, "difference": -0.05, "low": -0.11, "high": 0.01}}
                },
                "generated": {
                    "images": 741,
                    "seeds": 5,
                    "accuracy": 0.31,
                    "baseline_accuracy": 0.26,
                    "difference": 0.05,
                    "difference_low": 0.02,
                    "difference_high": 0.08,
                    "p_holm": 0.001,
                    "mde": 0.03,
                    "verdict": "helps",
                },
                "real": {
                    "images": 99,
                    "seeds": 5,
                    "accuracy": 0.25,
                    "baseline_accuracy": 0.24,
                    "difference": 0.01,
                    "difference_low": -0.06,
                    "difference_high": 0.08,
                    "p_holm": 0.7,
                    "mde": 0.09,
                    "verdict": "inconclusive at +-9.0 points",
                },
            }
        }
    }
    (metrics / "compare.json").write_text(json.dumps(compare))
    train = {
        "rows": {"train": 432, "synthetic_train": 0},
        "best_val_accuracy": 0.3,
        "test_accuracy": 0.41,
        "test_accuracy_ci95": [0.38, 0.44],
        "test_macro_f1": 0.3,
        "trials": [{}, {}, {}],
    }
    (metrics / "train" / "fer2013.json").write_text(json.dumps(train))
    pd.DataFrame(
        {"epoch": [1, 2], "train_loss": [2.0, 1.5], "val_loss": [1.9, 1.6], "val_accuracy": [0.2, 0.3]}
    ).to_csv(metrics / "train" / "history" / "fer2013.csv", index=False)
    _png(tmp_path / "sheets" / "sd_artificial" / "happy.png", 200)
    (metrics / "calibrate").mkdir()
    (metrics / "calibrate" / "fer2013_sdxl.json").write_text(json.dumps(_calibration()))
    return ReportInputs(metrics=metrics, contact_sheets=tmp_path / "sheets")


def _calibration() -> dict:
    """Metrics as `fersynth calibrate` writes them: four faces, two judges."""
    table = pd.DataFrame(
        {
            "key": list("abcd"),
            "prompt_emotion": ["happy", "happy", "sad", "fear"],
            "generator": "sdxl",
            "gender": ["female", "male", "female", "male"],
            "age_group": "adult",
            "ethnicity": "black",
            "judge:fer": ["happy", "sad", "sad", "sad"],
            "judge:models/merged": ["happy", "happy", "sad", "surprise"],
            "vote": ["happy", "happy", "sad", "surprise"],
            "decision": ["kept", "kept", "kept", "relabelled"],
            "final_emotion": ["happy", "happy", "sad", "surprise"],
        }
    )
    judges = [
        JudgeInfo("fer", "fer", "fer", ("FER2013",), "0" * 64),
        JudgeInfo("models/merged", "fersynth", "models/merged", ("data/merged",)),
    ]
    real = {
        "split": "val",
        "images": 72,
        "accuracy": {"fer": 0.236, "models/merged": 0.458, "vote": 0.361},
        "unseen_by_judge": {"fer": {"images": 72, "accuracy": 0.236}, "models/merged": {"images": 0, "accuracy": None}},
        "majority_class_share": 0.292,
    }
    return calibration_metrics(table, judges, CalibrateConfig(judges=("fer", "models/merged")), real)


def test_report_holds_every_section_with_its_numbers(inputs, tmp_path):
    summary = build_report(inputs, tmp_path / "report" / "index.html")
    html = (tmp_path / "report" / "index.html").read_text()
    assert summary["comparisons"] == 3 and summary["training"] == 1 and summary["samples"] == 1
    assert "<td>41.0</td>" in html and "<td>25.7</td>" in html  # the accuracy matrix, in percent
    assert "<td>+4.3</td>" in html and "[+1.0, +7.0]" in html and "&lt;0.001" in html and "helps" in html
    # the real and the generated balanced-set rows get their own lines, never mixed up as "real faces"
    assert "<td>real</td>" in html and "inconclusive at +-9.0 points" in html and "<td>generated</td>" in html
    assert "[-11.0, +1.0]" in html and "&plusmn;2.1" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html  # names are escaped
    assert "disgust" in html and "black" in html and "worst-best gap" in html and "noise_25" in html
    assert html.count("data:image/png;base64,") == 4  # heatmap, learning curve, confusion, sample sheet
    assert "No comparison yet" not in html
    # calibration: decisions, each judge's agreement and its accuracy on real faces beside the majority share
    assert "<strong>3</strong> kept, <strong>1</strong>" in html and "fear -&gt; surprise (1)" in html
    assert "<td>data/merged</td><td>75.0</td>" in html and "<td>45.8</td>" in html
    assert "fer (no better than the majority class)" in html and "<td>models/merged</td>" in html
    assert "scores\n29.2% on those 72 real faces" in html and "No calibration yet" not in html


def test_per_class_tables_end_with_the_averages_and_the_page_says_where_it_comes_from(inputs, tmp_path, monkeypatch):
    site = tmp_path / "report" / "data_docs"
    (site / "validations" / "fer2013").mkdir(parents=True)
    (site / "index.html").write_text("<html></html>")
    page = "validations/fer2013/manifest/manifest-0123/20000101T000000.000000Z/fer2013_source-manifest.html"
    (site / "validations" / "fer2013" / "index-entries.json").write_text(json.dumps([{"filepath": page}]))
    (site / "validations" / "not_a_suite").mkdir()  # no index rows: not listed
    _png(tmp_path / "report" / "demographics" / "merged.png", 40)
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lynx")
    build_report(inputs, tmp_path / "report" / "index.html")
    html = (tmp_path / "report" / "index.html").read_text()
    table = html.split("<h4>fer2013 on balanced_set (accuracy")[1].split("</table>")[0]
    rows = [cell.split("</td>")[0] for cell in table.split("<tr><td>")[1:]]
    assert rows == ["angry", "happy", "sad", "macro avg", "weighted avg"]
    stamp = html.split('id="provenance"')[1].split("</p>")[0]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
    assert commit[:12] not in html and "brisk-lynx" not in html  # a DVC output: no commit, no experiment name
    monkeypatch.setenv("DVC_EXP_NAME", "other-name")
    build_report(inputs, tmp_path / "report" / "again.html")
    assert (tmp_path / "report" / "again.html").read_bytes() == html.encode()  # same bytes in any run
    assert '<a href="data_docs/index.html">all suites</a>' in stamp
    assert f'<a href="data_docs/{page}">fer2013</a>' in stamp and "not_a_suite" not in stamp
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in stamp
    assert 'alt="demographics of merged"' in html and "No demographics plots" not in html
    # fairness: every group with its interval and size, the gap with its interval (older metrics: dashes)
    fairness = html.split('id="fairness"')[1].split('id="robustness"')[0]
    assert "<td>female</td><td>20.0</td>" in fairness and "[10.0, 30.0]" in fairness and "<td>12</td>" in fairness
    assert "worst-best gap" in fairness and "[-5.0, 25.0]" in fairness


def test_a_comparison_without_p_values_renders_dashes(inputs, tmp_path):
    """Too few test images (CASME II's 21 frames in a small demo) leave p-values out: a dash, not a crash."""
    compare = json.loads((inputs.metrics / "compare.json").read_text())
    entry = compare["fer2013_sdxl_vs_fer2013"]["balanced_set"]["generated"]
    for key in ("p_holm", "mde", "difference_low", "difference_high"):
        entry.pop(key)
    entry["verdict"] = "too few images (12 < 20)"
    (inputs.metrics / "compare.json").write_text(json.dumps(compare))
    build_report(inputs, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "too few images (12 &lt; 20)" in html and "[—, —]" in html


def test_missing_inputs_leave_their_sections_saying_so(tmp_path):
    build_report(ReportInputs(metrics=tmp_path / "none", contact_sheets=tmp_path / "none"), tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "No evaluation yet" in html and "No comparison yet" in html and "No sample grids" in html
    assert "No calibration yet" in html


def test_report_opens_in_a_headless_browser(inputs, tmp_path, chromium):
    page = tmp_path / "index.html"
    build_report(inputs, page)
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*command, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    # the page's script ran to the end and every inlined image decoded
    assert 'data-ready="1"' in dom
    images = int(dom.split('data-images="')[1].split('"')[0])
    assert images == 4 and f'data-images-decoded="{images}"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*command, "--window-size=1000,1400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (1400, 1000) and pixels.std() > 10  # text and tables drawn, not a blank page


def test_a_model_below_its_floor_is_marked_and_the_controls_and_true_labels_are_shown(inputs, tmp_path):
    evaluate = inputs.metrics / "evaluate"
    floor = {"fer2013": {"fer2013": 0.79, "balanced_set": 0.2}}
    below = [{"model": "fer2013", "test_set": "fer2013", "accuracy": 0.41, "floor": 0.79}]
    (evaluate / "floor.json").write_text(json.dumps({"floor": floor, "below_floor": below, "models_below_floor": 1}))
    (evaluate / "true_labels.json").write_text(json.dumps({"fer2013": {"fer2013": {"accuracy": 0.456, "images": 88}}}))
    controls = {"control_harm_on_fer2013": {"expected": "hurts", "verdict": "inconclusive (detects +-9.0 pts)"}}
    controls["control_harm_on_fer2013"]["found"] = False
    (inputs.metrics / "compare").mkdir(exist_ok=True)
    (inputs.metrics / "compare" / "controls.json").write_text(json.dumps(controls))
    build_report(inputs, tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    cross = html.split('id="cross-table"')[1].split("</table>")[0]
    assert '<td class="below-floor">41.0 <small>(floor 79.0)</small></td>' in cross
    assert "<td>25.7 <small>(floor 20.0)</small></td>" in cross  # above its floor: not marked
    assert "1 cell(s) below their floor" in html and "fer2013 on fer2013." in html
    assert "<td>45.6</td>" in html.split('id="true-labels-table"')[1].split("</table>")[0]
    controls_table = html.split('id="controls-table"')[1].split("</table>")[0]
    assert "<td>control_harm_on_fer2013</td><td>hurts</td>" in controls_table and "<td>NO</td>" in controls_table


def _entry(difference: float, verdict: str, mde: float | None = 0.05, **parts: dict) -> dict:
    """A compare.json entry (one scope) as compare writes it; ``parts``: real= and generated= sub-entries."""
    tested = mde is not None and not verdict.startswith(("not testable", "identical", "descriptive"))
    entry = {
        "images": 338,
        "seeds": 6,
        "accuracy": 0.8,
        "baseline_accuracy": 0.8 - difference,
        "difference": difference,
        "difference_low": difference - 0.03,
        "difference_high": difference + 0.03,
        "difference_low_adjusted": difference - 0.05 if tested else None,
        "difference_high_adjusted": difference + 0.05 if tested else None,
        "p_holm": 0.01 if verdict in ("helps", "hurts") else (0.6 if tested else None),
        "mde": mde if tested else None,
        "verdict": verdict,
    }
    return entry | parts


def _study(metrics) -> None:
    """What the demo's pipeline writes, in shape and number: six questions (three on a test set mixing real and
    generated faces), three known-answer controls, one-class models and cells below their floor."""
    inconclusive = "inconclusive (detects +-7.3 pts)"
    mixed = "descriptive (mixes real and generated faces: its parts are tested)"
    balanced_set = _entry(0.05, mixed, None, real=_entry(0.045, inconclusive), generated=_entry(0.056, "helps"))
    compare = {
        f"{model}_vs_fer2013": {"fer2013": _entry(-0.08, "hurts"), "balanced_set": balanced_set}
        for model in ("fer2013_sdxl", "fer2013_smote", "fer2013_smote_only")
    }
    compare["fer2013_sdxl_calibrated_vs_fer2013_sdxl"] = {
        "fer2013": _entry(0.0, "identical predictions: no difference to test", None),
        "balanced_set": balanced_set,
    }
    compare["generated_casme2_vs_casme2"] = {"casme2": _entry(-0.135, "not testable (one subject)", None)}
    compare["hybrid_vs_fer2013"] = {"affectnet": _entry(-0.048, "inconclusive (detects +-14.3 pts)", 0.143)}
    compare["control_benefit_vs_control_scarce"] = {"fer2013": _entry(0.085, "helps")}
    compare["control_harm_vs_fer2013"] = {"fer2013": _entry(-0.123, "hurts")}
    compare["control_null_vs_fer2013"] = {"fer2013": _entry(-0.001, "inconclusive (detects +-1.8 pts)", 0.018)}
    (metrics / "compare.json").write_text(json.dumps(compare))
    controls = {
        "control_benefit_on_fer2013": {"expected": "helps", "verdict": "helps", "found": True},
        "control_harm_on_fer2013": {"expected": "hurts", "verdict": "inconclusive (detects +-9.0 pts)", "found": False},
        "control_null_on_fer2013": {"expected": "inconclusive", "verdict": "inconclusive (d)", "found": True},
    }
    (metrics / "compare").mkdir(exist_ok=True)
    (metrics / "compare" / "controls.json").write_text(json.dumps(controls))
    flagged = [
        {"model": "generated_casme2", "test_set": "casme2", "reasons": ["names surprise for 100% of the images"]},
        {"model": "casme2", "test_set": "casme2", "reasons": ["no better than always naming repression"]},
        {"model": "fer2013", "test_set": "fer2013", "reasons": ["names happy for 95% of the images in 1 of 6"]},
    ]
    one_class = {"share": 0.9, "top_share": {}, "flagged": flagged, "models_flagged": 3}
    (metrics / "evaluate" / "one_class.json").write_text(json.dumps(one_class))
    below = [{"model": "fer2013", "test_set": "balanced_set", "accuracy": 0.257, "floor": 0.3}]
    floor = {"floor": {"fer2013": {"balanced_set": 0.3}}, "below_floor": below, "models_below_floor": 1}
    (metrics / "evaluate" / "floor.json").write_text(json.dumps(floor))


def test_the_first_lines_answer_each_question_and_the_controls_and_flag_one_class_models(inputs, tmp_path):
    _study(inputs.metrics)
    build_report(inputs, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    top = html.split('id="answers"')[1].split("</section>")[0]
    assert top.index("answers-table") < top.index("controls-line") < top.index("flags-line") < top.index("<nav>")
    rows = [row.split("</tr>")[0] for row in top.split('<tr class="question">')[1:]]
    assert len(rows) == 6 and not any("control_" in row for row in rows)  # controls have their own line
    sdxl = next(row for row in rows if "<b>fer2013_sdxl</b> vs fer2013" in row)
    # per test set: verdict, difference, and the family-adjusted interval that agrees with the verdict
    assert "<b>hurts</b> -8.0" in sdxl and "[-13.0, -3.0]" in sdxl
    assert "<b>helps</b> +5.6" in sdxl and "<b>inconclusive</b> +4.5 <small>detects ±7.3 pts</small>" in sdxl
    assert "descriptive" not in sdxl  # the mixed set as a whole is answered by its real and generated parts
    assert "train rows ? (? synthetic) vs 432 (0)" in sdxl  # no training metrics for fer2013_sdxl here
    identical = next(row for row in rows if "<b>fer2013_sdxl_calibrated</b>" in row)
    assert "<b>identical predictions</b> +0.0 <small>no difference to test</small>" in identical
    assert "detects ±0.0" not in html and "+-0.0" not in html
    casme = next(row for row in rows if "generated_casme2" in row)
    assert "not testable" in casme and "unadjusted" in casme and "one class: generated_casme2, casme2" in casme
    # the controls: each with what was planted, its verdict and whether it was found
    controls = top.split('id="controls-line"')[1].split("</p>")[0]
    assert "planted benefit</a> (control_benefit on fer2013):\n  <b>helps</b> +8.5 [+3.5, +13.5]" in controls
    assert "NOT found (expected hurts)" in controls and controls.count('class="ok">found') == 2
    flags = top.split('id="flags-line"')[1].split("</p>")[0]
    assert "generated_casme2 on casme2; casme2 on casme2; fer2013 on fer2013" in flags
    assert "1 cell(s) below their HOG floor" in flags
    # every link down lands on a row of the details (the anchors exist, once each)
    for anchor in {link.split('"')[0] for link in top.split('href="#cmp-')[1:]}:
        assert html.count(f'id="cmp-{anchor}"') == 1, anchor
    # below: the cross-dataset cell is struck through with its reason, the comparison row warns
    cross = html.split('id="cross-table"')[1].split("</table>")[0]
    assert '<td class="one-class" title="names happy for 95% of the images in 1 of 6">41.0' in cross
    assert "fer2013 answers one class here" in html.split('id="compare-table"')[1].split("</table>")[0]
    assert "answers one class on fer2013: its group accuracies" in html.split('id="fairness"')[1]


def test_the_answers_fit_the_first_screen_of_a_laptop(inputs, tmp_path, chromium):
    """The page's first 768 px at 1366 wide hold every question's answer, the controls and the flags (the
    old page showed a provenance note and the cross-dataset table there; its answers began 4.5 screens down)."""
    _study(inputs.metrics)
    page = tmp_path / "index.html"
    build_report(inputs, page)
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*command, "--window-size=1366,768", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    body = dom.split("<body")[1].split(">")[0]
    assert 'data-viewport="1366x' in body  # laid out 1366 px wide
    bottom = int(body.split('data-answers-bottom="')[1].split('"')[0])
    height = int(body.split('data-page-height="')[1].split('"')[0])
    assert 300 < bottom <= 768 < height  # the answers end within the first screen, and the page goes on
    shot = tmp_path / "first-screen.png"
    subprocess.run(
        [*command, "--window-size=1366,768", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (768, 1366)
    # the verdict colours are drawn on the first screen: helps (green) and hurts (red) cells
    green = (np.abs(pixels - [0xD9, 0xF2, 0xD9]).sum(axis=2) < 6).sum()
    red = (np.abs(pixels - [0xF7, 0xD6, 0xD6]).sum(axis=2) < 6).sum()
    assert green > 2000 and red > 2000
