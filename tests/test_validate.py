import io
import json
import re
import subprocess

import pytest
from PIL import Image

from fersynth.validate import SuiteConfig, ValidationFailed, validate_variant
from fersynth.variant import VariantWriter
from tests.conftest import image_bytes


def _variant(path, rows):
    """rows: (key, split, emotion, label, subject, identity)."""
    with VariantWriter(path) as writer:
        for key, split, emotion, label, subject, identity in rows:
            data = image_bytes(identity=identity)
            writer.add(
                {
                    "key": key,
                    "source": key,
                    "split": split,
                    "emotion": emotion,
                    "label": label,
                    "label_space": "basic7",
                    "subject": subject,
                    "dataset": "toy",
                },
                Image.open(io.BytesIO(data)),
                data,
            )
        writer.commit()
    return path


GOOD = [
    (f"k{i}", ["train", "val", "test"][i % 3], ["angry", "happy"][i % 2], [0, 3][i % 2], f"s{i % 3}", i)
    for i in range(12)
]


def _suite(**overrides):
    return SuiteConfig(**({"min_per_class": 0} | overrides))


def test_good_variant_passes_and_writes_metrics_and_docs(tmp_path):
    variant = _variant(tmp_path / "toy", GOOD)
    summary = validate_variant(variant, _suite(subjects_disjoint=True), tmp_path / "q.json", tmp_path / "docs")
    assert summary["success"] and summary["failed"] == 0
    assert json.loads((tmp_path / "q.json").read_text())["evaluated"] == summary["evaluated"]
    assert (tmp_path / "docs" / "index.html").exists()


def test_data_docs_render_in_a_browser_without_internet(tmp_path, chromium):
    """GX links jQuery, Bootstrap and bootstrap-table from CDNs: offline, the index page was blank. The
    pages now fetch nothing from the internet, and bootstrap-table draws the index in a browser that
    cannot resolve any host name."""
    variant = _variant(tmp_path / "toy", GOOD)
    validate_variant(variant, _suite(), tmp_path / "q.json", tmp_path / "docs")
    pages = sorted((tmp_path / "docs").rglob("*.html"))
    assert len(pages) > 3
    for page in pages:
        text = page.read_text()
        assert not re.search(r'<(?:script|img)[^>]*\ssrc="https?://|<link[^>]*\shref="https?://', text), page
        for local in re.findall(r'(?:src|href)="((?:\.\./)*static/vendor/[^"]+)"', text):
            assert (page.parent / local).is_file(), (page, local)
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # no host name resolves: as offline as it gets
            "--dump-dom",
            (tmp_path / "docs" / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'class="bootstrap-table' in dom  # the table plugin ran (jQuery, Bootstrap and it loaded)
    assert dom.count("toy.manifest") >= 1 and "fa-check-circle" in dom  # rows drawn, with status icons


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
