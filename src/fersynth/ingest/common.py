"""Shared pieces of the ingesters: config, safe file listing and reading, strict number parsing, record
building, folder-per-class.

Source files are hostile input: every name, path, number and image is checked here, and what fails goes
to quarantine with a reason (``BadInput``) instead of crashing the stage or being skipped uncounted.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from fersynth.config import at_least, check_seeds
from fersynth.variants.files import FileRejected, read_bounded
from fersynth.variants.images import ImageLimits, ImageRejected, decode_image, to_8bit
from fersynth.variants.labels import BASIC7, FOLDER_DROPPED, FOLDER_NAMES
from fersynth.variants.quarantine import printable
from fersynth.variants.variant import VariantWriter, encode_png, pixel_sha256

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class IngestConfig:
    """``params.yaml: ingest``. ``casme2_frames`` is ``all`` (onset..offset) or ``apex``;
    ``casme2_missing_apex`` says what apex mode does where ApexFrame is ``/``: ``middle`` frame or
    ``drop`` the clip. ``workers`` processes parse and encode where a reader can use them (FER2013's
    CSV); 0 means one per available CPU. Outputs do not depend on it. Images larger than
    ``max_pixels`` (width x height, read from the header before decoding) or with a side under
    ``min_side`` pixels are quarantined (``too large`` / ``too small``), and so is an image file over
    ``max_file_mb`` MB, from its size, before it is read."""

    seed: int = 42
    workers: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    shard_max_mb: int = 128
    casme2_frames: str = "all"
    casme2_missing_apex: str = "middle"
    max_pixels: int = ImageLimits.max_pixels
    min_side: int = ImageLimits.min_side
    max_file_mb: int = ImageLimits.max_file_bytes // 2**20

    def __post_init__(self) -> None:
        if len(self.fractions) != 3 or abs(sum(self.fractions) - 1.0) > 1e-6 or min(self.fractions) < 0:
            raise ValueError(f"split fractions must be three numbers >= 0 that sum to 1, got {self.fractions}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.casme2_frames not in ("all", "apex"):
            raise ValueError(f"casme2_frames must be 'all' or 'apex', got {self.casme2_frames!r}")
        if self.casme2_missing_apex not in ("middle", "drop"):
            raise ValueError(f"casme2_missing_apex must be 'middle' or 'drop', got {self.casme2_missing_apex!r}")
        self.limits  # noqa: B018 (validates max_pixels, min_side and max_file_mb)
        check_seeds("ingest", seed=self.seed)
        at_least("ingest", 1, shard_max_mb=self.shard_max_mb, max_file_mb=self.max_file_mb)

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(max_pixels=self.max_pixels, min_side=self.min_side, max_file_bytes=self.max_file_mb * 2**20)


def worker_count(config: IngestConfig) -> int:
    return config.workers or len(os.sched_getaffinity(0))


class BadInput(Exception):
    """An input that goes to quarantine; the message is the reason."""

    category = "bad_input"


class DroppedByRule(BadInput):
    """A well-formed input that a documented rule leaves out (e.g. AffectNet's contempt)."""

    category = "rule"


class DuplicateInput(BadInput):
    """A second listing of an input already read (a repeated list or sheet row)."""

    category = "duplicate"


# numbers and names -------------------------------------------------------------------------------
_INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_int(value: object, what: str) -> int:
    """A whole number from a CSV field or a spreadsheet cell: ASCII digits (``"12"``, ``" 12 "``) or an
    integral finite number (``12.0``). ``"³"``, ``"inf"``, ``"nan"``, ``"1.5"`` raise :class:`BadInput`
    (``int()`` accepts other scripts' digits; ``int(float("inf"))`` raises OverflowError).

    >>> parse_int(" 42 ", "expression"), parse_int(7.0, "OnsetFrame")
    (42, 7)
    """
    if isinstance(value, bool):
        raise BadInput(f"malformed row: {what} {value!r} is not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise BadInput(f"malformed row: {what} {value!r} is not a whole number")
    text = str(value).strip() if value is not None else ""
    if _INTEGER.fullmatch(text) and len(text) <= 18:
        return int(text)
    if text.isascii() and re.fullmatch(r"[+-]?[0-9]+\.0*", text) and len(text) <= 24:
        return int(float(text))
    if not text:
        raise BadInput(f"malformed row: {what} is empty")
    raise BadInput(f"malformed row: {what} {printable(text)[:40]!r} is not a whole number")


def is_utf8(name: str) -> bool:
    """False for a name holding bytes that are not UTF-8 (kept by Python as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def inside_root(root: Path, relative: str, what: str = "path") -> Path:
    """``root / relative`` for a path read from a dataset file (a list entry, a sheet cell), refusing
    absolute paths, ``..``, NUL and symlinks that lead out of ``root`` (reason ``outside source root``)."""
    text = str(relative)
    if not text or "\x00" in text or not is_utf8(text):
        raise BadInput(f"malformed row: {what} {printable(text)[:80]!r} is not a usable path")
    parts = PurePosixPath(text).parts
    if PurePosixPath(text).is_absolute() or ".." in parts:
        raise BadInput(f"outside source root: {what} {printable(text)[:80]!r}")
    path = Path(root) / text
    check_inside(root, path, what)
    return path


def check_inside(root: Path, path: Path, what: str = "path") -> None:
    """Raise ``outside source root`` when ``path``, with its symlinks followed, leaves ``root``, and
    ``symlink loop`` when they never end."""
    target = resolved(path, f"{what} {printable(path.name)!r}")
    if not target.is_relative_to(Path(root).resolve()):
        raise BadInput(f"outside source root: {what} {printable(path.name)!r} leads to {printable(target)}")


def resolved(path: Path, what: str = "") -> Path:
    """``path`` with its symlinks followed. A loop (``a -> b -> a``) raises :class:`BadInput` ``symlink loop``
    (``: <what>`` added when given) where pathlib raises RuntimeError (Python 3.11, 3.12) or an ELOOP
    OSError (3.13): a source folder holding one is hostile input, not a crash."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as error:
        if isinstance(error, OSError) and error.errno != errno.ELOOP:
            raise
        raise BadInput(f"symlink loop: {what}" if what else "symlink loop") from None


# files -------------------------------------------------------------------------------------------
def check_image_suffix(path: Path) -> None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise BadInput(f"not an image: suffix {printable(path.suffix) or '(none)'}")


def read_image_file(path: Path, limits: ImageLimits | None = None) -> tuple[bytes | None, Image.Image]:
    """Read and fully decode an image file, raising :class:`BadInput` with a reason on failure. Its type and
    size are checked before it is read (a FIFO, ``/dev/zero``, a file over ``limits.max_file_bytes``).

    Returns the file's bytes (kept as they are) and the image; where the pixels had to be brought to
    8 bits (16-bit PNG, float TIFF) the bytes are None and the converted image is what is kept."""
    limits = limits or ImageLimits()
    try:
        data = read_bounded(path, limits.max_file_bytes)
    except FileRejected as error:
        raise BadInput(str(error)) from None
    if not data:
        raise BadInput("corrupt image: empty file")
    try:
        image = decode_image(data, limits)
    except ImageRejected as error:
        raise BadInput(str(error)) from error
    except Exception as error:  # noqa: BLE001 (decoders raise struct.error, IndexError... on hostile bytes)
        reason = "not a recognised image format" if "cannot identify" in str(error) else str(error)
        raise BadInput(f"corrupt image: {reason}") from error
    try:
        converted = to_8bit(image)
    except ImageRejected as error:
        raise BadInput(str(error)) from error
    return (data if converted is image else None), converted


def scan_files(writer: VariantWriter, root: Path) -> list[Path]:
    """Every regular file under ``root``, in sorted path order. Everything else met on the way is read
    and quarantined with its reason, never skipped uncounted: hidden files and folders, names that are
    not UTF-8, symlinks that dangle, loop, lead out of ``root`` or to a folder, and special files (a FIFO
    would block the read forever)."""
    root = Path(root)
    files: list[Path] = []

    def reject(path: Path, reason: str) -> None:
        writer.reject(path.relative_to(root).as_posix(), reason)

    def walk(directory: Path) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            reject(directory, f"unreadable folder: {error.strerror or error}")
            return
        for entry in entries:
            path = Path(entry.path)
            if not is_utf8(entry.name):
                reject(path, "malformed file name: not valid UTF-8")
            elif entry.name.startswith("."):
                reject(path, "hidden folder: not read" if entry.is_dir(follow_symlinks=False) else "hidden file")
            elif entry.is_symlink():
                try:
                    target = resolved(path)
                except BadInput as error:
                    reject(path, str(error))
                    continue
                if not target.exists():
                    reject(path, "dangling symlink")
                elif not target.is_relative_to(root.resolve()):
                    reject(path, f"outside source root: symlink to {printable(target)}")
                elif target.is_dir():
                    reject(path, "symlinked folder: not followed")
                elif target.is_file():
                    files.append(path)
                else:
                    reject(path, "not a regular file: symlink to a special file")
            elif entry.is_dir(follow_symlinks=False):
                walk(path)
            elif entry.is_file(follow_symlinks=False):
                files.append(path)
            else:
                reject(path, "not a regular file")

    walk(root)
    return files


def ingest_each_image(
    writer: VariantWriter, src: Path, desc: str, limits: ImageLimits, record_of: Callable[[Path], dict]
) -> None:
    """One row per image file under ``src`` whose name alone says what it is (UTKFace, unlabeled folders):
    :func:`scan_files`, then per file the suffix, ``record_of(path)`` (its fields from the name; raises
    :class:`BadInput` for a malformed one) and the image itself; whatever fails is quarantined with its reason."""
    from fersynth.log import progress

    for path in progress(scan_files(writer, src), desc=desc):
        source = path.relative_to(src).as_posix()
        try:
            check_image_suffix(path)
            record = record_of(path)
            data, image = read_image_file(path, limits)
        except BadInput as error:
            writer.reject(source, str(error))
            continue
        writer.add({"key": source, "source": source, **record}, image, data)


def basic7_record(dataset: str, key: str, source: str, emotion: str, split: str | None = None) -> dict:
    return {
        "key": key,
        "source": source,
        "dataset": dataset,
        "label_space": "basic7",
        "emotion": emotion,
        "label": BASIC7.index(emotion),
        "split": split,
        "synthetic": False,
    }


@dataclass(frozen=True)
class ReadImage:
    """An image file read for a variant: the bytes to keep (the file's own, or PNG where the pixels had to
    be brought to 8 bits), the pixel hash, size, mode and format (what :meth:`VariantWriter.add` computes)."""

    data: bytes
    sha256: str
    size: tuple[int, int]
    mode: str
    fmt: str


def read_for_variant(path: Path, limits: ImageLimits) -> ReadImage | str:
    """:func:`read_image_file` and everything a variant keeps of it; the quarantine reason on failure."""
    try:
        data, image = read_image_file(path, limits)
    except BadInput as error:
        return str(error)
    fmt = "PNG" if data is None else (image.format or "unknown")
    return ReadImage(data if data is not None else encode_png(image), pixel_sha256(image), image.size, image.mode, fmt)


def _read_batch(paths: list[Path], limits: ImageLimits) -> list[ReadImage | str]:
    return [read_for_variant(path, limits) for path in paths]


READ_BATCH_FILES = 256
READ_BYTES_IN_FLIGHT = 256 * 2**20  # files being read at once, at most about (at least one batch)
MIN_FILES_FOR_POOL = 1024  # below this, starting processes costs more than it saves


def die_with_parent() -> None:
    """Pool initializer: a worker is killed when the stage process dies (SIGTERM from DVC, SIGKILL from a
    timeout), instead of living on holding the stage's output streams."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before the call above
        os._exit(1)


def read_images(paths: list[Path], limits: ImageLimits, workers: int = 1) -> Iterator[ReadImage | str]:
    """:func:`read_for_variant` of every path, in order. With ``workers`` > 1 and enough files, worker
    processes read, decode, check and hash a few batches ahead (memory stays flat); the results, and so
    the variant, do not depend on ``workers``."""
    if workers <= 1 or len(paths) < MIN_FILES_FOR_POOL:
        yield from (read_for_variant(path, limits) for path in paths)
        return
    with ProcessPoolExecutor(workers, initializer=die_with_parent) as pool:
        in_flight: deque = deque()  # (future, bytes of its files)
        try:
            for start in range(0, len(paths), READ_BATCH_FILES):
                batch = paths[start : start + READ_BATCH_FILES]
                in_flight.append((pool.submit(_read_batch, batch, limits), sum(_size(p) for p in batch)))
                while len(in_flight) > 2 * workers or (
                    len(in_flight) > 1 and sum(size for _, size in in_flight) > READ_BYTES_IN_FLIGHT
                ):
                    yield from in_flight.popleft()[0].result()
            while in_flight:
                yield from in_flight.popleft()[0].result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # an error or Ctrl-C: do not finish the queue first
            raise


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def ingest_class_folders(
    writer: VariantWriter,
    root: Path,
    dataset: str,
    files: list[Path],
    limits: ImageLimits,
    split_of: dict[Path, str] | None = None,
    workers: int = 1,
) -> None:
    """Folder-per-class releases (NHFI, AffectNet folders, FER2013 folders): the parent folder names
    the emotion. ``split_of`` maps files to a split the release fixes; others are split later. Names are
    checked here, in file order; the images are read by :func:`read_images` (``workers`` processes)."""
    from fersynth.log import progress

    plan = []  # (path, source, emotion, why not, category), in file order
    for path in files:
        source = path.relative_to(root).as_posix()
        folder = path.parent.name.lower()
        try:
            check_image_suffix(path)
        except BadInput as error:
            plan.append((path, source, None, str(error), "bad_input"))
            continue
        if folder in FOLDER_DROPPED:
            plan.append((path, source, None, f"rule: class {folder!r} is outside the 7 basic emotions", "rule"))
        elif folder not in FOLDER_NAMES:
            plan.append((path, source, None, f"unknown label: folder {path.parent.name!r}", "bad_input"))
        else:
            plan.append((path, source, FOLDER_NAMES[folder], None, None))
    images = read_images([path for path, _, _, why, _ in plan if why is None], limits, workers)
    for path, source, emotion, why, category in progress(plan, desc=f"ingest {dataset}"):
        if why is not None:
            writer.reject(source, why, category)
            continue
        read = next(images)
        if isinstance(read, str):
            writer.reject(source, read)
            continue
        record = basic7_record(dataset, source, source, emotion, (split_of or {}).get(path))
        writer.add_encoded(record, read.data, read.sha256, read.size, read.mode, read.fmt)
