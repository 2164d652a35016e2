"""Reading a file fersynth did not make: its type and size are checked on the open descriptor before a byte
is read, so a FIFO cannot hang a stage, ``/dev/zero`` cannot fill memory and a sparse 1.5 GB ``x.png`` is
refused from its size, not after it has been read whole.

Two families: ``read_bounded`` / ``open_regular`` / ``check_regular`` raise :class:`FileRejected` (a reason,
for a caller that quarantines one file); ``read_input`` / ``open_input`` / ``check_input`` /
``read_json_bounded`` raise a one-line :class:`~fersynth.errors.InputError` naming what the file is (a model
config, a metrics file, a shard: there is no row to quarantine, the command stops).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from fersynth.errors import InputError

MAX_FILE_BYTES = 256 * 2**20  # an input image or video larger than this is refused before it is read
MAX_JSON_BYTES = 16 * 2**20  # a model's config.json, a metrics or record JSON: kilobytes in practice
MAX_CSV_BYTES = 2**30  # a predictions, history or ground-truth CSV: tens of MB at full scale
MAX_MANIFEST_BYTES = 2**30  # a manifest.parquet: about 100 bytes a row, so ~0.1 GB for a million images
MAX_SHARD_BYTES = 16 * 2**30  # an image shard: shard_max_mb (128 MB by default) plus one image
MAX_WEIGHTS_BYTES = 64 * 2**30  # a checkpoint: a VGG's is 0.5 GB, an SDXL single file 7 GB (float32: 14)


class FileRejected(ValueError):
    """A file that is not read; the message is the reason (``not a regular file: a FIFO``, ``too large: ...``)."""


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """``"a FIFO"``, ``"a folder"``, ... for a file mode that is not a regular file's."""
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def check_regular(path: Path, max_bytes: int = MAX_FILE_BYTES) -> os.stat_result:
    """``path``'s stat (symlinks followed) when it is a regular file of at most ``max_bytes``; otherwise
    :class:`FileRejected` with the reason. Opening nothing, it never blocks."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise FileRejected(f"unreadable file: {error.strerror or error}") from None
    _check(info, max_bytes)
    return info


def read_bounded(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes``. The file is opened non-blocking (a
    FIFO swapped in after a stat cannot hang the read), its type and size come from the open descriptor,
    and at most ``max_bytes`` are read even if it grows meanwhile. Raises :class:`FileRejected`.

    >>> import tempfile; path = Path(tempfile.mkdtemp()) / "x.png"; _ = path.write_bytes(b"12345")
    >>> read_bounded(path)
    b'12345'
    >>> read_bounded(path, max_bytes=4)
    Traceback (most recent call last):
    ...
    fersynth.variants.files.FileRejected: too large: 5 bytes > 4 bytes
    """
    descriptor = _open_checked(path, max_bytes)
    try:
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(descriptor, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as error:
        raise FileRejected(f"unreadable file: {error.strerror or error}") from None
    finally:
        os.close(descriptor)
    if total > max_bytes:
        raise FileRejected(f"too large: grew past {_size(max_bytes)} while being read")
    return b"".join(chunks)


def open_regular(path: Path, max_bytes: int = MAX_FILE_BYTES) -> BinaryIO:
    """``path`` open for binary reading, for a file to stream rather than hold (a 300 MB CSV): checked like
    :func:`read_bounded` on the open descriptor, so a FIFO or ``/dev/zero`` given as a table is a reason,
    not a hang or a read without end. The size is checked once, when opened. Raises :class:`FileRejected`;
    the caller closes the file."""
    return os.fdopen(_open_checked(path, max_bytes), "rb")


def _open_checked(path: Path, max_bytes: int) -> int:
    """A blocking descriptor of ``path`` once its type and size passed; opened non-blocking so that the
    open itself cannot wait for a FIFO's writer."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise FileRejected(f"unreadable file: {error.strerror or error}") from None
    try:
        _check(os.fstat(descriptor), max_bytes)
        os.set_blocking(descriptor, True)
    except OSError as error:
        os.close(descriptor)
        raise FileRejected(f"unreadable file: {error.strerror or error}") from None
    except FileRejected:
        os.close(descriptor)
        raise
    return descriptor


def _check(info: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise FileRejected(f"not a regular file: {kind_of(info.st_mode)}")
    if info.st_size > max_bytes:
        raise FileRejected(f"too large: {_size(info.st_size)} > {_size(max_bytes)}")


def _size(count: int) -> str:
    """``5 bytes``, ``1.5 GB``: a file size for a reason line."""
    for unit, shift in (("GB", 30), ("MB", 20), ("KB", 10)):
        if count >= 1 << shift:
            return f"{count / (1 << shift):.1f} {unit}"
    return f"{count} bytes"


@contextlib.contextmanager
def _refusal_as_input_error(path: Path, what: str) -> Iterator[None]:
    try:
        yield
    except FileRejected as error:
        raise InputError(f"{what} {path}: {error}") from None


def check_input(path: Path, max_bytes: int, what: str) -> os.stat_result:
    """:func:`check_regular`, a refusal being the one-line :class:`InputError` ``<what> <path>: <reason>``.
    For a file a library opens by its path (safetensors weights): nothing is opened here."""
    with _refusal_as_input_error(path, what):
        return check_regular(path, max_bytes)


def open_input(path: Path, max_bytes: int, what: str) -> BinaryIO:
    """:func:`open_regular` (a table to stream, a shard for pyarrow), a refusal being an :class:`InputError`."""
    with _refusal_as_input_error(path, what):
        return open_regular(path, max_bytes)


def read_input(path: Path, max_bytes: int, what: str) -> bytes:
    """:func:`read_bounded`, a refusal being an :class:`InputError`."""
    with _refusal_as_input_error(path, what):
        return read_bounded(path, max_bytes)


def read_json_bounded(path: Path, max_bytes: int = MAX_JSON_BYTES, what: str = "JSON file") -> Any:
    """The JSON in ``path``, a regular file of at most ``max_bytes``; anything else, and text that is not
    JSON, is the one-line :class:`InputError` ``<what> <path>: <reason>``.

    >>> import tempfile; path = Path(tempfile.mkdtemp()) / "m.json"; _ = path.write_text('{"a": 1}')
    >>> read_json_bounded(path, what="metrics file")
    {'a': 1}
    >>> _ = path.write_text("{")
    >>> read_json_bounded(path, what="metrics file")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fersynth.errors.InputError: metrics file ...m.json: not valid JSON (Expecting property name ...)
    """
    data = read_input(path, max_bytes, what)
    try:
        return json.loads(data)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise InputError(f"{what} {path}: not valid JSON ({str(error).splitlines()[0]})") from None
    except RecursionError:
        raise InputError(f"{what} {path}: not valid JSON (nested too deeply)") from None


def read_json_if_present(path: Path, max_bytes: int = MAX_JSON_BYTES, what: str = "JSON file") -> Any | None:
    """None when nothing is at ``path`` (a dangling link counts as nothing), else :func:`read_json_bounded`:
    a FIFO or a folder where a metrics file should be is an error, not a missing file."""
    return read_json_bounded(path, max_bytes, what) if Path(path).exists() else None


def file_sha256(path: Path, max_bytes: int, what: str) -> str:
    """The hex sha256 of ``path``, a regular file of at most ``max_bytes``, read in 1 MB blocks (a 0.5 GB
    file is never held whole); a refusal is an :class:`InputError`."""
    digest = hashlib.sha256()
    with open_input(path, max_bytes, what) as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def copy_regular(source: str, target: str) -> str:
    """``shutil.copy2`` for a regular file of at most :data:`MAX_SHARD_BYTES` only: the ``copy_function`` of a
    ``copytree`` of shards (shutil refuses a FIFO but copies a link to ``/dev/zero`` without end)."""
    check_input(Path(source), MAX_SHARD_BYTES, "file to copy")
    return shutil.copy2(source, target)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx")


def check_model_dir(directory: Path, what: str) -> None:
    """Every file a library may open under a local model directory (diffusers' ``save_pretrained`` layout:
    JSON configs, tokenizer files, weights) is a regular file: weights of at most :data:`MAX_WEIGHTS_BYTES`,
    anything else of at most :data:`MAX_FILE_BYTES`. The library then reads them by their paths; a FIFO
    among them would hang it, a link to ``/dev/zero`` named ``config.json`` fill memory. A refusal is an
    :class:`InputError`; a directory that is not there is left to the library (a hub id)."""
    for folder, _, names in os.walk(directory):
        for name in sorted(names):
            path = Path(folder) / name
            limit = MAX_WEIGHTS_BYTES if path.suffix.lower() in WEIGHT_SUFFIXES else MAX_FILE_BYTES
            check_input(path, limit, what)
