"""Reading a file fersynth did not make: its type and size are checked on the open descriptor before a byte
is read, so a FIFO cannot hang a stage, ``/dev/zero`` cannot fill memory and a sparse 1.5 GB ``x.png`` is
refused from its size, not after it has been read whole.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

MAX_FILE_BYTES = 256 * 2**20  # an input image or video larger than this is refused before it is read


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
