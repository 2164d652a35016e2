"""Opening a dataset's own tables (FER2013's CSV, AffectNet's lists): a regular file of a bounded size,
read as lines of a bounded length, so that a FIFO, ``/dev/zero`` or a 1.5 GB line cannot hang a stage
or fill its memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from fersynth.errors import InputError
from fersynth.variants.files import FileRejected, open_regular

MAX_TABLE_BYTES = 4 * 2**30  # about ten times the largest release's table (FER2013's CSV is 290 MB)
MAX_LINE_BYTES = 2**16  # a FER2013 row is about 9 KB, an AffectNet row with its landmarks about 1 KB
TOO_LONG = f"malformed row: longer than {MAX_LINE_BYTES} bytes"


def open_table(path: Path) -> BinaryIO:
    """``path`` open for streaming, or a one-line :class:`InputError` (``not a regular file: a FIFO``,
    ``too large: ...``): a table is the whole source, there is no row to quarantine."""
    try:
        return open_regular(path, MAX_TABLE_BYTES)
    except FileRejected as error:
        raise InputError(f"{path}: {error}") from None


def bounded_lines(handle: BinaryIO, max_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes | None]:
    """The lines of ``handle``, line break kept; None for a line over ``max_bytes``, which is skipped in
    chunks rather than read whole (a 1.5 GB line without a break would be 1.5 GB of memory).

    >>> import io; list(bounded_lines(io.BytesIO(b"ab\\n" + b"x" * 9 + b"\\ncd"), max_bytes=4))
    [b'ab\\n', None, b'cd']
    """
    while line := handle.readline(max_bytes + 1):
        if len(line) <= max_bytes or line.endswith(b"\n"):  # readline(n) returns n bytes at most
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = handle.readline(2**20)
        yield None


def text_lines(handle: BinaryIO, too_long: set[int]) -> Iterator[str]:
    """:func:`bounded_lines` as text for the ``csv`` module (UTF-8, a leading BOM dropped, bytes that are
    not UTF-8 kept as surrogates for the caller to refuse). An over-long line is given as an empty line
    and its number (1-based, the reader's ``line_num``) added to ``too_long``, so the reader counts it
    and the caller quarantines it with :data:`TOO_LONG`."""
    for number, line in enumerate(bounded_lines(handle), start=1):
        if line is None:
            too_long.add(number)
            yield "\n"
        else:
            yield line.decode("utf-8", "surrogateescape").removeprefix("\ufeff" if number == 1 else "")
