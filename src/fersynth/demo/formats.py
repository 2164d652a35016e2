"""Writers of each source's exact native layout, with planted duplicates, corrupt files and bad rows.

Every writer returns ground-truth rows keyed by the same ``source`` identifier the ingester records,
so later stages can join their manifest to the truth.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from fersynth.demo.renderer import FaceSpec, render_face
from fersynth.demo.sampling import Face, Nuisances, basic7_faces, draw_faces, ground_truth_row
from fersynth.log import progress
from fersynth.variants.labels import AFFECTNET_CODES, CASME2, FER2013_CODES, UTK_GENDERS, UTK_RACES

FER2013_CODE_OF = {name: code for code, name in FER2013_CODES.items()}
AFFECTNET_CODE_OF = {name: code for code, name in AFFECTNET_CODES.items()}
PIXEL_TEXT = np.array([str(v) for v in range(256)], dtype=object)


def _render(face: Face, size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    kind = face.nuisance.get("unrecognisable")
    if kind is None:
        return render_face(face.spec, size, mode, seed=seed)
    rng = np.random.default_rng([face.spec.identity, 8])
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    if kind == "blank":  # a flat grey card with a little sensor noise
        pixels = rng.integers(0, 3, shape) + int(rng.integers(20, 230))
    else:  # pure noise
        pixels = rng.integers(0, 256, shape)
    return Image.fromarray(pixels.astype(np.uint8), mode)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {"compress_level": 1}))
    return buffer.getvalue()


def _corrupt_bytes(rng: np.random.Generator, valid: bytes, kind: int) -> bytes:
    """Three ways files break: truncated, empty, garbage."""
    return [valid[: len(valid) // 3], b"", bytes(rng.integers(0, 256, 512, dtype=np.uint8))][kind % 3]


def _duplicate_positions(n: int, rate: float, rng: np.random.Generator) -> set[int]:
    return set(rng.choice(n, size=int(round(n * rate)), replace=False).tolist()) if n else set()


# FER2013 --------------------------------------------------------------------------------------
def write_fer2013(
    out: Path,
    rows: int,
    fmt: str,
    nuisances: Nuisances,
    rng: np.random.Generator,
    usage: tuple[float, float, float],
) -> list[dict]:
    """``rows`` faces in Kaggle's CSV or the folder release; ``usage``: the shares of Training, PublicTest
    (val) and PrivateTest (test) (``DemoConfig.fer2013_usage``)."""
    faces = basic7_faces("fer2013", rows, nuisances, rng)
    usages = rng.choice(["Training", "PublicTest", "PrivateTest"], size=rows, p=list(usage))
    duplicates = _duplicate_positions(rows, nuisances.duplicates, rng)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        return _fer2013_csv(out / "fer2013.csv", faces, usages, duplicates, nuisances, rng)
    return _fer2013_folders(out, faces, usages, duplicates, nuisances, rng)


def _fer2013_csv(path, faces, usages, duplicates, nuisances, rng) -> list[dict]:
    truth = []
    bad_rows = [
        f"9,{' '.join(['0'] * 2304)},Training",
        f"3,{' '.join(['1'] * 2303)},Training",
        f"3,{' '.join(['x'] * 2304)},PublicTest",
        f"2,{' '.join(['0'] * 2304)},Validation",
        "4,12 13",
    ]
    plant_at = set(
        rng.choice(
            len(faces), size=min(len(bad_rows) if nuisances.malformed else 0, len(faces)), replace=False
        ).tolist()
    )
    with path.open("w", newline="") as handle:
        handle.write("emotion,pixels,Usage\n")
        line, planted = 1, 0
        for i, face in enumerate(progress(faces, desc="demo fer2013 (csv)")):
            pixels = np.asarray(_render(face, (48, 48), "L", i))
            text = " ".join(PIXEL_TEXT[pixels.ravel()])
            copies = [usages[i]] + ([usages[(i + 1) % len(usages)]] if i in duplicates else [])
            for copy, usage in enumerate(copies):
                line += 1
                handle.write(f"{FER2013_CODE_OF[face.given_emotion]},{text},{usage}\n")
                truth.append(ground_truth_row(f"fer2013.csv:{line}", face, duplicate=copy > 0, corrupt=False))
            if i in plant_at:
                line += 1
                handle.write(bad_rows[planted % len(bad_rows)] + "\n")
                truth.append({"source": f"fer2013.csv:{line}", "corrupt": True})
                planted += 1
    return truth


def _fer2013_folders(out, faces, usages, duplicates, nuisances, rng) -> list[dict]:
    truth, counter = [], 0
    for i, face in enumerate(progress(faces, desc="demo fer2013 (folders)")):
        data = _encode(_render(face, (48, 48), "L", i), "JPEG")
        for copy in range(2 if i in duplicates else 1):
            counter += 1
            usage = usages[i]
            rel = Path("train" if usage == "Training" else "test") / face.given_emotion / f"{usage}_{counter}.jpg"
            _write(out / rel, data)
            truth.append(ground_truth_row(rel.as_posix(), face, duplicate=copy > 0, corrupt=False))
    truth += _plant_corrupt(out, [f"train/happy/Training_{10**7 + k}.jpg" for k in range(nuisances.corrupt)], rng)
    for k in range(nuisances.malformed):
        rel = f"train/sad/image{k}.jpg"  # name lacks the Usage prefix
        _write(out / rel, _encode(render_face(FaceSpec(emotion="sad"), (48, 48), "L"), "JPEG"))
        truth.append({"source": rel, "corrupt": True})
    return truth


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _plant_corrupt(out: Path, rels: list[str], rng: np.random.Generator) -> list[dict]:
    valid = _encode(render_face(FaceSpec(), (48, 48), "L"), "PNG")
    for k, rel in enumerate(rels):
        _write(out / rel, _corrupt_bytes(rng, valid, k))
    return [{"source": rel, "corrupt": True} for rel in rels]


# Folder-per-class sets (NHFI; AffectNet's folder release) --------------------------------------
def write_class_folders(
    out: Path,
    dataset: str,
    images: int,
    size: int,
    mode: str,
    fmt: str,
    nuisances: Nuisances,
    rng: np.random.Generator,
    folder_names: dict[str, str],
) -> list[dict]:
    faces = basic7_faces(dataset, images, nuisances, rng)
    duplicates = _duplicate_positions(images, nuisances.duplicates, rng)
    suffix = ".png" if fmt == "PNG" else ".jpg"
    truth = []
    for i, face in enumerate(progress(faces, desc=f"demo {dataset}")):
        data = _encode(_render(face, (size, size), mode, i), fmt)
        for copy in range(2 if i in duplicates else 1):
            rel = f"{folder_names[face.given_emotion]}/{dataset}_{i:06d}{'_copy' if copy else ''}{suffix}"
            _write(out / rel, data)
            truth.append(ground_truth_row(rel, face, duplicate=copy > 0, corrupt=False))
    truth += _plant_corrupt(out, [f"happy/{dataset}_broken_{k}{suffix}" for k in range(nuisances.corrupt)], rng)
    for k in range(nuisances.malformed):
        rel = ["confused", "contempt"][k % 2] + f"/{dataset}_odd_{k}{suffix}"
        _write(out / rel, _encode(render_face(FaceSpec(), (size, size), mode), fmt))
        truth.append({"source": rel, "corrupt": True})
    _write(out / "README.txt", b"demo copy\n")
    truth.append({"source": "README.txt", "corrupt": True})
    return truth


# SFHQ (unlabeled synthetic faces) ---------------------------------------------------------------
def write_sfhq(out: Path, images: int, size: int, nuisances: Nuisances, rng: np.random.Generator) -> list[dict]:
    """SFHQ's layout: ``images/images/SFHQ_pt1_<8 digits>.jpg`` RGB, no labels anywhere (the ground truth
    keeps the emotion each face was drawn with, hidden from the pipeline)."""
    faces = basic7_faces("sfhq", images, replace(nuisances, label_noise=0.0), rng)
    truth = []
    for i, face in enumerate(progress(faces, desc="demo sfhq")):
        rel = f"images/images/SFHQ_pt1_{i:08d}.jpg"
        _write(out / rel, _encode(_render(face, (size, size), "RGB", i), "JPEG"))
        truth.append(ground_truth_row(rel, face, duplicate=False, corrupt=False))
    truth += _plant_corrupt(out, [f"images/images/SFHQ_pt1_broken_{k}.jpg" for k in range(nuisances.corrupt)], rng)
    _write(out / "README.txt", b"demo copy\n")
    truth.append({"source": "README.txt", "corrupt": True})
    return truth


# AffectNet official lists ----------------------------------------------------------------------
AFFECTNET_COLUMNS = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)


def write_affectnet_lists(out: Path, images: int, nuisances: Nuisances, rng: np.random.Generator) -> list[dict]:
    faces = basic7_faces("affectnet", images, nuisances, rng)
    truth, lines = [], {"training.csv": [], "validation.csv": []}
    for i, face in enumerate(progress(faces, desc="demo affectnet (lists)")):
        rel = f"{1 + i // 500}/{i:07x}.jpg"
        canvas = int(rng.integers(240, 300))
        x, y = (int(v) for v in rng.integers(0, canvas - 224, size=2))
        image = Image.new("RGB", (canvas, canvas), (90, 90, 90))
        image.paste(_render(face, (224, 224), "RGB", i), (x, y))
        _write(out / "Manually_Annotated_Images" / rel, _encode(image, "JPEG"))
        list_name = "validation.csv" if rng.random() < 0.1 else "training.csv"
        code = AFFECTNET_CODE_OF[face.given_emotion]
        if rng.random() < 0.05:  # contempt / none / uncertain / no-face rows, dropped by rule
            code = int(rng.integers(7, 11))
        landmarks = ";".join(f"{v:.2f}" for v in rng.uniform(x, x + 224, 136))
        lines[list_name].append(
            f"{rel},{x},{y},224,224,{landmarks},{code},{rng.uniform(-1, 1):.3f},{rng.uniform(-1, 1):.3f}"
        )
        truth.append(ground_truth_row(rel, face, duplicate=False, corrupt=False, expression_code=code))
    bad = [
        "zz/missing.jpg,0,0,224,224,,3,0,0",
        f"{1}/{0:07x}.jpg,200,200,224,224,,3,0,0",
        "only,three,fields",
        "zz/unknown.jpg,0,0,10,10,,12,0,0",
    ]
    for k in range(nuisances.malformed * 2):
        lines["training.csv"].append(bad[k % len(bad)])
    for list_name, rows in lines.items():
        _write(
            out / "Manually_Annotated_file_lists" / list_name, ("\n".join([AFFECTNET_COLUMNS, *rows]) + "\n").encode()
        )
    return truth


# UTKFace --------------------------------------------------------------------------------------
def write_utkface(out: Path, images: int, nuisances: Nuisances, rng: np.random.Generator) -> list[dict]:
    faces = draw_faces(images, (1,), ("neutral",), nuisances, rng, intensity=(0.0, 0.3))
    gender_code = {v: k for k, v in UTK_GENDERS.items()}
    race_code = {v: k for k, v in UTK_RACES.items()}
    truth = []
    for i, face in enumerate(progress(faces, desc="demo utkface")):
        stamp = 20170000000000000 + int(rng.integers(10**13))
        name = f"{face.age}_{gender_code[face.spec.gender]}_{race_code[face.spec.ethnicity]}_{stamp}.jpg.chip.jpg"
        _write(out / "UTKFace" / name, _encode(_render(face, (200, 200), "RGB", i), "JPEG"))
        truth.append(ground_truth_row(f"UTKFace/{name}", face, duplicate=False, corrupt=False))
    odd = [
        f"{39}_{1}_{20170109150557335}.jpg.chip.jpg",
        "abc_0_1_20170109150557335.jpg.chip.jpg",
        "25_7_1_20170109150557335.jpg.chip.jpg",
    ]
    for k in range(nuisances.malformed + 1):
        _write(out / "UTKFace" / odd[k % len(odd)], _encode(render_face(FaceSpec(), (200, 200), "RGB"), "JPEG"))
        truth.append({"source": f"UTKFace/{odd[k % len(odd)]}", "corrupt": True})
    truth += _plant_corrupt(out, [f"UTKFace/30_0_0_2017011{k}.jpg.chip.jpg" for k in range(nuisances.corrupt)], rng)
    return truth


# CASME II -------------------------------------------------------------------------------------
CASME2_HEADER = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]
CASME2_AUS = {
    "happiness": "12",
    "disgust": "4+9",
    "repression": "14",
    "surprise": "1+2",
    "others": "4",
    "fear": "20",
    "sadness": "1+4",
}


def write_casme2(
    out: Path,
    subjects: int,
    clips_per_subject: int,
    frames_per_clip: tuple[int, int],
    nuisances: Nuisances,
    rng: np.random.Generator,
    release: str = "CASME2_RAW_selected",
) -> list[dict]:
    from openpyxl import Workbook

    from fersynth.demo.sampling import CASME2_MIX

    pattern = "img{}.jpg" if release == "CASME2_RAW_selected" else "reg_img{}.jpg"
    mix = tuple(CASME2_MIX[c] for c in CASME2)
    sheet_rows, truth = [], []
    for s in progress(range(1, subjects + 1), desc="demo casme2", unit="subject"):
        for c, face in enumerate(
            draw_faces(clips_per_subject, mix, CASME2, Nuisances(label_noise=0, unrecognisable=0), rng, (0.6, 0.9))
        ):
            identity_spec = replace(face.spec, identity=s * 1000, angle=0.0, blur=0.0, occlusion=False, light=1.0)
            clip = f"EP{c + 1:02d}_{int(rng.integers(1, 20)):02d}{'f' if rng.random() < 0.5 else ''}"
            onset = int(rng.integers(1, 200))
            offset = onset + int(rng.integers(*frames_per_clip)) - 1
            apex = int(rng.integers(onset, offset + 1))
            apex_cell = "/" if rng.random() < 0.1 else apex
            sheet_rows.append([s, clip, onset, apex_cell, offset, CASME2_AUS[face.true_emotion], face.true_emotion])
            for frame in range(onset, offset + 1):
                ramp = 1.0 - abs(frame - apex) / max(apex - onset, offset - apex, 1)
                spec = replace(identity_spec, intensity=face.spec.intensity * ramp)
                rel = f"{release}/sub{s:02d}/{clip}/{pattern.format(frame)}"
                _write(out / rel, _encode(render_face(spec, (280, 340), "RGB", seed=frame), "JPEG"))
                truth.append(ground_truth_row(rel, face, duplicate=False, corrupt=False, apex=frame == apex))
    # planted problems: an unknown emotion, a clip whose frames are missing, a corrupt frame, a bad row
    sheet_rows.append([1, "EP99_01", 10, 12, 14, "", "contempt"])
    sheet_rows.append([2, "EP98_01", 10, 12, 14, "4", "others"])
    sheet_rows.append(["subX", "EP97_01", 10, "/", 14, "4", "others"])
    first = sheet_rows[0]
    broken = f"{release}/sub{first[0]:02d}/{first[1]}/{pattern.format(first[2])}"
    _write(out / broken, b"")
    for row in truth:
        row["corrupt"] = row["source"] == broken
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(CASME2_HEADER)
    for row in sheet_rows:
        sheet.append(row)
    _save_reproducibly(workbook, out / "CASME2-coding-20140508.xlsx")
    return truth


def _save_reproducibly(workbook, path: Path) -> None:
    """openpyxl stamps the time into document properties and zip entries; pin both so the same seed
    gives the same bytes (and DVC sees an unchanged output)."""
    fixed = datetime(2014, 5, 8)
    workbook.properties.created = fixed
    buffer = io.BytesIO()
    workbook.save(buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == "docProps/core.xml":  # openpyxl sets 'modified' to now on save
                data = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>2014-05-08T00:00:00Z", data)
            target.writestr(zipfile.ZipInfo(entry.filename, date_time=fixed.timetuple()[:6]), data)
