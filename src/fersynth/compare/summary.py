"""``fersynth summary``: the few numbers a reader of ``dvc exp show`` (or the VS Code extension, or Studio) needs
to answer the question, in three small files that ``dvc.yaml`` declares as its only ``metrics``:

- ``answers.json``: per compared pair and tested scope (a test set, or the real / generated part of one that
  mixes both) its short verdict (``helps``, ``hurts``, ``inconclusive``, ...), then per known-answer control
  ``found`` or ``NOT found``;
- ``comparisons.json``: per pair and scope the numbers behind the verdict: the difference, its 95% interval,
  the Holm-adjusted p-value and the smallest difference the design could detect (``detectable``, the ``+-X
  pts`` of an inconclusive verdict) and the seed pairs; the detail (per class, per group, per seed, power) stays in
  ``metrics/compare.json``;
- ``experiments.json``: per trained experiment its test accuracy and macro-F1 (means over seeds), its HOG +
  logistic-regression floor on the same test rows; the per-epoch history and the
  per-trial rows stay in ``metrics/train/<experiment>.json``.

The verdicts have a file of their own because ``dvc exp show`` orders metric columns by file path, then by key
order in the file, and its terminal pager fits them into 1024 characters by collapsing columns from the right:
``answers.json`` sorts first, so its short verdicts are the columns a reader sees. All three are pure functions
of the detailed files, so they cannot disagree with them.
"""

from __future__ import annotations

from pathlib import Path

from fersynth.atomic import write_json
from fersynth.log import get_logger
from fersynth.variants.files import read_json_bounded

log = get_logger(__name__)

ANSWERS, COMPARISONS, EXPERIMENTS = "answers.json", "comparisons.json", "experiments.json"
UNTESTED = ("descriptive",)  # a mixed test set whose parts carry the verdicts
# the verdict kinds of fersynth.compare.compare whose detail follows in parentheses ("inconclusive (detects
# +-3.4 pts)", "too few seeds (3 < 5)"); a verdict of any other kind is kept whole, never dropped
VERDICT_KINDS = ("helps", "hurts", "inconclusive", "not testable", "too few seeds", "too few images")
# compare's two ways of saying the models score every image alike ("identical predictions: ...")
NO_DIFFERENCE = ": no difference to test"


def short_verdict(verdict: str | None) -> str | None:
    """The verdict's kind without its detail: ``"inconclusive (detects +-3.4 pts)"`` -> ``"inconclusive"``,
    ``"identical predictions: no difference to test"`` -> ``"no difference to test"``; a verdict of an unknown
    kind (or ``None``) is returned unchanged."""
    if not isinstance(verdict, str):
        return verdict
    head = verdict.split(" (", 1)[0]
    if head in VERDICT_KINDS:
        return head
    if verdict.endswith(NO_DIFFERENCE):
        return NO_DIFFERENCE.removeprefix(": ")
    return verdict


def judged_scopes(compared: dict, pairs: dict | None = None) -> dict[str, dict[str, dict]]:
    """``{pair: {scope: compare entry}}`` for every scope that was judged; a mixed test set contributes its
    ``<test>_real`` and ``<test>_generated`` parts instead of itself. Pairs and test sets come in the study's
    order, ``pairs`` (``params.yaml: compare.pairs``: candidate -> baseline and test sets); any other after it,
    sorted."""
    order = study_order(pairs or {})
    judged: dict[str, dict] = {}
    for pair, tests in sorted(compared.items(), key=lambda item: _rank(order, item[0])):
        if not isinstance(tests, dict):
            continue
        scopes = {}
        for test, entry in sorted(tests.items(), key=lambda item: _rank(order.get(pair, {}), item[0])):
            if not str(entry.get("verdict", "")).startswith(UNTESTED):
                scopes[test] = entry
            for part in ("real", "generated"):
                if isinstance(entry.get(part), dict):
                    scopes[f"{test}_{part}"] = entry[part]
        judged[pair] = scopes
    return judged


def study_order(pairs: dict) -> dict[str, dict[str, int]]:
    """``{"<candidate>_vs_<baseline>": {test set: position}}`` in ``compare.pairs`` order (a dict keeps it).

    >>> study_order({"sdxl": {"baseline": "fer2013", "test_sets": ["fer2013", "balanced_set"]}})
    {'sdxl_vs_fer2013': {'fer2013': 0, 'balanced_set': 1}}
    """
    return {
        f"{candidate}_vs_{spec['baseline']}": {test: i for i, test in enumerate(spec.get("test_sets") or ())}
        for candidate, spec in pairs.items()
    }


def _rank(order: dict, name: str) -> tuple[int, str]:
    position = list(order).index(name) if name in order else len(order)
    return (position, name)


def answer_summary(compared: dict, controls: dict, pairs: dict | None = None) -> dict:
    """``{pair: {scope: short verdict}, ..., "controls": {control: "found" | "NOT found"}}``: the study's
    pairs and scopes (:func:`judged_scopes`), then whether each known-answer control
    (``metrics/compare/controls.json``) found what was planted; a control's own pair is that line, not a
    verdict of its own (the verdict is in ``metrics/compare/controls.json``)."""
    planted = {name.rsplit("_on_", 1)[0] for name in controls}
    answers: dict[str, dict] = {
        pair: {scope: short_verdict(entry.get("verdict")) for scope, entry in scopes.items()}
        for pair, scopes in judged_scopes(compared, pairs).items()
        if pair.split("_vs_", 1)[0] not in planted
    }
    answers["controls"] = {name: "found" if check["found"] else "NOT found" for name, check in controls.items()}
    return answers


def comparison_summary(compared: dict, pairs: dict | None = None) -> dict:
    """``{pair: {scope: {difference, low, high, p_holm, detectable}}}`` for every judged scope (see
    :func:`judged_scopes`); the verdict is in :func:`answer_summary`."""
    return {
        pair: {scope: _numbers(entry) for scope, entry in scopes.items()}
        for pair, scopes in judged_scopes(compared, pairs).items()
    }


def experiment_summary(train_metrics: dict[str, dict]) -> dict:
    """``{experiment: {accuracy, macro_f1, floor}}`` from each ``metrics/train/<experiment>.json`` (its trials
    are ``train.<experiment>.trials``, a param column already)."""
    return {
        name: {
            "accuracy": metrics.get("test_accuracy"),
            "macro_f1": metrics.get("test_macro_f1"),
            "floor": (metrics.get("floor") or {}).get("test_accuracy"),
        }
        for name, metrics in sorted(train_metrics.items())
    }


def summarize(
    compare_path: Path, controls_path: Path, train_dir: Path, out_dir: Path, pairs: dict | None = None
) -> dict:
    """Read ``compare.json``, the controls' ``controls.json`` and ``<train_dir>/*.json``; write
    ``answers.json``, ``comparisons.json`` and ``experiments.json`` under ``out_dir``, the pairs in the
    order of ``pairs`` (``compare.pairs``)."""
    compared = read_json_bounded(Path(compare_path), what="compare results")
    controls = read_json_bounded(Path(controls_path), what="controls")
    trained = {p.stem: read_json_bounded(p, what="training metrics") for p in sorted(Path(train_dir).glob("*.json"))}
    answers = answer_summary(compared, controls, pairs)
    comparisons, experiments = comparison_summary(compared, pairs), experiment_summary(trained)
    write_json(Path(out_dir) / ANSWERS, answers, sort_keys=False)
    write_json(Path(out_dir) / COMPARISONS, comparisons, sort_keys=False)
    write_json(Path(out_dir) / EXPERIMENTS, experiments, sort_keys=False)
    verdicts = [v for pair, scopes in answers.items() if pair != "controls" for v in scopes.values()]
    log.info(
        "summary: read %d comparisons and %d experiments; wrote %d verdicts (%d helps, %d hurts), %d of %d "
        "controls found",
        len(comparisons), len(experiments), len(verdicts), verdicts.count("helps"), verdicts.count("hurts"),
        list(answers["controls"].values()).count("found"), len(controls),
    )  # fmt: skip
    return {"answers": answers, "comparisons": comparisons, "experiments": experiments}


def _numbers(entry: dict) -> dict:
    return {
        "difference": entry.get("difference"),
        "low": entry.get("difference_low"),
        "high": entry.get("difference_high"),
        "p_holm": entry.get("p_holm"),
        "detectable": entry.get("mde"),  # compare's minimum detectable effect; None where nothing was tested
        "seeds": entry.get("seeds"),  # the seed pairs the verdict rests on
    }
