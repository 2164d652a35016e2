import json
import re

import pytest
import yaml
from click.testing import CliRunner

from fersynth.checks.validate import SuiteConfig, ValidationFailed, validate_variant
from fersynth.cli import main
from fersynth.variants.variant import VariantWriter
from tests.conftest import add_basic7_image, image_bytes


def _variant(path, rows):
    """rows: (key, split, emotion, label, subject, identity)."""
    with VariantWriter(path) as writer:
        for key, split, emotion, label, subject, identity in rows:
            data = image_bytes(identity=identity)
            add_basic7_image(writer, key, split, emotion, label, data, subject=subject, dataset="toy")
        writer.commit()
    return path


GOOD = [
    (f"k{i}", ["train", "val", "test"][i % 3], ["angry", "happy"][i % 2], [0, 3][i % 2], f"s{i % 3}", i)
    for i in range(12)
]


def _suite(**overrides):
    return SuiteConfig(**({"min_per_class": 0} | overrides))


def test_good_variant_passes_and_writes_metrics_and_its_pages_of_the_site(tmp_path):
    variant = _variant(tmp_path / "toy", GOOD)
    summary = validate_variant(variant, _suite(subjects_disjoint=True), tmp_path / "q.json", tmp_path / "docs")
    assert summary["success"] and summary["failed"] == 0
    assert json.loads((tmp_path / "q.json").read_text())["evaluated"] == summary["evaluated"]
    entries = json.loads((tmp_path / "docs" / "validations" / "toy" / "index-entries.json").read_text())
    assert [e["asset_name"] for e in entries] == ["manifest", "sha256_splits", "subject_splits", "integrity"]
    assert all((tmp_path / "docs" / e["filepath"]).is_file() for e in entries)
    assert all((tmp_path / "docs" / e["expectation_suite_filepath"]).is_file() for e in entries)
    # the index and the static files are the data-docs stage's: a validate stage writes only its suite
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["expectations", "validations"]


def test_subject_on_two_sides_fails(tmp_path):
    rows = GOOD[:-1] + [("leak", "test", "happy", 3, "s0", 99)]  # s0 is otherwise only in train
    variant = _variant(tmp_path / "toy", rows)
    validate_variant(variant, _suite(), tmp_path / "a.json", tmp_path / "a")  # not checked: passes
    with pytest.raises(ValidationFailed):
        validate_variant(variant, _suite(subjects_disjoint=True), tmp_path / "q.json", tmp_path / "docs")
    failed = [
        (batch, r["expectation"])
        for batch, results in json.loads((tmp_path / "q.json").read_text())["batches"].items()
        for r in results
        if not r["success"]
    ]
    assert failed == [
        ("subject_splits", "expect_column_values_to_be_between(column=n_splits, max_value=1.0, min_value=1.0)")
    ]


def test_same_picture_twice_fails(tmp_path):
    rows = GOOD + [("copy", "test", "angry", 0, "s0", 0)]  # identity 0 again: same pixels as k0
    variant = _variant(tmp_path / "toy", rows)
    with pytest.raises(ValidationFailed):
        validate_variant(variant, _suite(), tmp_path / "q.json", tmp_path / "docs")


def test_class_count_bounds(tmp_path, caplog):
    variant = _variant(tmp_path / "toy", GOOD)
    # six of each of angry and happy, none of the other five classes
    with pytest.raises(ValidationFailed):
        validate_variant(variant, SuiteConfig(min_per_class=1), tmp_path / "q.json", tmp_path / "docs")
    summary = json.loads((tmp_path / "q.json").read_text())
    assert summary["failed"] == 5
    # each count check names its class: in the metrics, the log and the Data Docs
    failed = sorted(r["check"] for r in summary["batches"]["manifest"] if not r["success"])
    assert failed == [
        f"Class {name} (label {label}): at least 1 rows."
        for label, name in sorted([(1, "disgust"), (2, "fear"), (4, "neutral"), (5, "sad"), (6, "surprise")])
    ]
    assert "FAILED Class disgust (label 1): at least 1 rows." in caplog.text and "observed 0" in caplog.text
    docs = "".join(p.read_text() for p in (tmp_path / "docs" / "validations").rglob("*.html"))
    assert "Class surprise (label 6): at least 1 rows." in docs
    with pytest.raises(ValidationFailed):
        validate_variant(variant, _suite(max_per_class=5), tmp_path / "q.json", tmp_path / "docs")
    assert validate_variant(variant, _suite(max_per_class=6), tmp_path / "q.json", tmp_path / "docs")["success"]


def test_unknown_label_space_is_refused():
    with pytest.raises(ValueError):
        SuiteConfig(label_space="basic8")


def test_balanced_cells_count_empty_cells_as_zero(tmp_path):
    variant = _variant(tmp_path / "toy", GOOD)  # 6 angry, 6 happy; 4 per split
    assert validate_variant(
        variant, _suite(balanced_cells=("dataset", "split"), cell_count=4), tmp_path / "a.json", tmp_path / "a"
    )["success"]
    # over the basic-7 label space the five absent emotions are cells with 0 images: not balanced
    with pytest.raises(ValidationFailed):
        validate_variant(
            variant, _suite(balanced_cells=("emotion",), cell_count=6), tmp_path / "b.json", tmp_path / "b"
        )
    results = json.loads((tmp_path / "b.json").read_text())["batches"]["balanced_cells"]
    assert [r["success"] for r in results] == [False, True]  # counts wrong; all 7 cells listed


def _rewrite_shard(variant, change):
    """Apply ``change(keys, blobs) -> (keys, blobs)`` to the variant's only shard, as a damaged pull would."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    [shard] = (variant / "images").glob("*.parquet")
    table = pq.read_table(shard)
    keys, blobs = change(table.column("key").to_pylist(), table.column("data").to_pylist())
    pq.write_table(pa.table({"key": keys, "data": blobs}, schema=table.schema), shard)
    return shard


def _integrity(tmp_path):
    return json.loads((tmp_path / "q.json").read_text())["integrity"]


def test_an_intact_variant_passes_the_image_check(tmp_path):
    variant = _variant(tmp_path / "toy", GOOD)
    summary = validate_variant(variant, _suite(), tmp_path / "q.json", tmp_path / "docs")
    assert summary["integrity"] == {"rows": 12, "intact": 12, "problems": {}, "examples": []}


@pytest.mark.parametrize(
    "damage, problem",
    [
        # a byte flipped inside the compressed pixels: the PNG no longer decodes (zlib/CRC) or decodes wrong
        (lambda keys, blobs: (keys, [blobs[0][:60] + bytes([blobs[0][60] ^ 0xFF]) + blobs[0][61:], *blobs[1:]]), None),
        # a valid picture, but another one: decodes fine, wrong pixels
        (lambda keys, blobs: (keys, [image_bytes(identity=77), *blobs[1:]]), "pixels differ from sha256"),
        (lambda keys, blobs: (keys[1:], blobs[1:]), "not in its shard"),
        (lambda keys, blobs: ([*keys, "stray"], [*blobs, blobs[0]]), "not in the manifest"),
    ],
)
def test_a_damaged_image_fails_the_suite_and_is_named(tmp_path, damage, problem):
    variant = _variant(tmp_path / "toy", GOOD)
    _rewrite_shard(variant, damage)
    with pytest.raises(ValidationFailed):
        validate_variant(variant, _suite(), tmp_path / "q.json", tmp_path / "docs")
    integrity = _integrity(tmp_path)
    assert integrity["intact"] == 11 or problem == "not in the manifest"
    [example] = integrity["examples"]
    assert example.startswith("stray:" if problem == "not in the manifest" else "k0:")
    if problem:
        assert example.endswith(problem)
    else:
        assert "does not decode" in example or "pixels differ" in example


def test_a_missing_or_garbled_shard_fails_without_a_traceback(tmp_path):
    variant = _variant(tmp_path / "toy", GOOD)
    [shard] = (variant / "images").glob("*.parquet")
    shard.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValidationFailed):
        validate_variant(variant, _suite(), tmp_path / "q.json", tmp_path / "docs")
    assert _integrity(tmp_path)["problems"] == {"unreadable shard": 12}
    shard.unlink()
    with pytest.raises(ValidationFailed):
        validate_variant(variant, _suite(), tmp_path / "q.json", tmp_path / "docs")
    assert _integrity(tmp_path)["problems"] == {"missing shard": 12}


def _rows(counts: dict[tuple[str, str], int]) -> list[tuple]:
    """Variant rows with ``counts[(split, emotion)]`` pictures each (emotion in angry / happy / sad)."""
    labels = {"angry": 0, "happy": 3, "sad": 5}
    rows, identity = [], 0
    for (split, emotion), n in counts.items():
        for _ in range(n):
            rows.append((f"k{identity}", split, emotion, labels[emotion], f"s{identity}", identity))
            identity += 1
    return rows


def _failed_checks(metrics) -> list[str]:
    batches = json.loads(metrics.read_text())["batches"]
    return [r.get("check", r["expectation"]) for results in batches.values() for r in results if not r["success"]]


def test_class_balance_is_bounded_by_the_stated_ratio(tmp_path):
    """9 happy, 3 sad, 4 angry: the largest class is 3x the smallest; every class is above a min count,
    so only the ratio can catch it."""
    variant = _variant(tmp_path / "toy", _rows({("train", "happy"): 9, ("train", "sad"): 3, ("test", "angry"): 4}))
    note = "Imbalanced by nature: sad is rare."
    with pytest.raises(ValidationFailed):
        validate_variant(
            variant, _suite(max_class_ratio=2.9, class_ratio_note=note), tmp_path / "q.json", tmp_path / "docs"
        )
    described = (
        "Class balance: the largest class has at most 2.9 times the rows of the smallest present class"
        " (here happy 9 vs sad 3 rows)."
    )
    assert _failed_checks(tmp_path / "q.json") == [f"{described} {note}"]
    [result] = json.loads((tmp_path / "q.json").read_text())["batches"]["class_balance"]
    assert result["observed"] == 3.0
    assert json.loads((tmp_path / "q.json").read_text())["class_balance"] == {
        "ratio": 3.0,
        "largest": "happy",
        "smallest": "sad",
        "max_ratio": 2.9,
        "splits": ["train", "val", "test"],
    }
    pages = "".join(p.read_text() for p in (tmp_path / "docs" / "validations" / "toy").rglob("*.html"))
    assert note in pages and "ratio_to_smallest" in pages  # the Data Docs state the bound and why
    summary = validate_variant(variant, _suite(max_class_ratio=3), tmp_path / "q.json", tmp_path / "docs")
    assert summary["success"] and summary["class_balance"]["ratio"] == 3.0


def test_class_balance_over_the_named_splits_only(tmp_path):
    """SMOTE balances train only: its natural val / test splits must not fail a train-balance bound."""
    counts = {("train", "happy"): 5, ("train", "sad"): 5, ("test", "happy"): 8, ("test", "sad"): 1}
    variant = _variant(tmp_path / "toy", _rows(counts))
    whole = _suite(max_class_ratio=1)
    with pytest.raises(ValidationFailed):
        validate_variant(variant, whole, tmp_path / "q.json", tmp_path / "docs")
    assert json.loads((tmp_path / "q.json").read_text())["class_balance"]["ratio"] == round(13 / 6, 4)
    train = _suite(max_class_ratio=1, class_ratio_splits=("train",))
    summary = validate_variant(variant, train, tmp_path / "q.json", tmp_path / "docs")
    assert summary["success"] and summary["class_balance"]["ratio"] == 1.0


def test_class_balance_without_a_bound_is_reported_not_checked(tmp_path):
    variant = _variant(tmp_path / "toy", _rows({("train", "happy"): 9, ("train", "sad"): 1}))
    summary = validate_variant(variant, _suite(), tmp_path / "q.json", tmp_path / "docs")
    assert summary["success"] and "class_balance" not in summary["batches"]
    assert summary["class_balance"]["ratio"] == 9.0 and summary["class_balance"]["max_ratio"] is None


@pytest.mark.parametrize(
    "values, message",
    [
        ({"max_class_ratio": 0.5}, "at least 1"),
        ({"max_class_ratio": float("inf")}, "at least 1"),
        ({"max_class_ratio": "10"}, "must be a number"),
        ({"max_class_ratio": 2, "label_space": "none"}, "needs emotion labels"),
        ({"class_ratio_splits": ("train", "holdout")}, "['holdout'] are not among splits"),
    ],
)
def test_a_balance_bound_that_cannot_be_right_is_refused(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SuiteConfig(**values)


def test_by_hand_validate_finds_the_suite_of_its_variant(tmp_path, monkeypatch):
    """`fersynth validate data/filtered/fer2013` once checked and wrote suite `fer2013` (the directory's name):
    another suite's outputs, rewritten with other numbers, and `dvc status` dirty."""
    from click.testing import CliRunner

    from fersynth.cli import main

    for folder in ("data/original/fer2013", "data/filtered/fer2013"):
        _variant(tmp_path / folder, GOOD)
    suites = {
        "fer2013": {"variant": "data/original/fer2013", "min_per_class": 0, "max_class_ratio": 1},
        "filtered_fer2013": {"variant": "data/filtered/fer2013", "min_per_class": 0, "subjects_disjoint": True},
    }
    (tmp_path / "params.yaml").write_text(json.dumps({"validate": {"suites": suites}}))
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["validate", "data/filtered/fer2013"])
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in (tmp_path / "metrics" / "quality").iterdir()) == ["filtered_fer2013.json"]
    assert "subject_splits" in json.loads((tmp_path / "metrics/quality/filtered_fer2013.json").read_text())["batches"]
    assert sorted(p.name for p in (tmp_path / "reports/data_docs/validations").iterdir()) == ["filtered_fer2013"]


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_validating_twice_writes_the_same_bytes(tmp_path, monkeypatch):
    """The site and the metrics are DVC outputs: a second run (by hand, after a pull) must leave them as
    they were, byte for byte, wherever the project sits, so `dvc status` stays clean."""
    from click.testing import CliRunner

    from fersynth.cli import main

    trees = []
    for clone in ("a", "b"):
        root = tmp_path / clone
        _variant(root / "data" / "toy", GOOD)
        (root / "params.yaml").write_text(
            json.dumps(
                {"validate": {"suites": {"toy": {"variant": "data/toy", "min_per_class": 0, "max_class_ratio": 2}}}}
            )
        )
        monkeypatch.chdir(root)
        for _ in range(2 if clone == "a" else 1):
            for command in (["validate", "data/toy"], ["data-docs"]):
                done = CliRunner().invoke(main, command)
                assert done.exit_code == 0, done.output
            trees.append(_tree(root / "reports") | _tree(root / "metrics"))
    assert trees[0] == trees[1] == trees[2]
    assert "data_docs/index.html" in trees[0] and "data_docs/static/vendor/js/jquery.min.js" in trees[0]
    text = b"".join(trees[0].values()).decode("utf-8", "replace")
    assert str(tmp_path) not in text  # no absolute path of the checkout in any output


def test_validate_on_a_truncated_manifest_is_a_one_line_data_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    variant = _variant(tmp_path / "toy", GOOD)
    manifest = variant / "manifest.parquet"
    manifest.write_bytes(manifest.read_bytes()[:100])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"validate": {"suites": {"toy": {"min_per_class": 0}}}}))
    result = CliRunner().invoke(main, ["validate", str(variant), "--suite", "toy", "--params", "params.yaml"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("fersynth validate: error: ") and "manifest.parquet is not a readable parquet file" in line
