"""variants/files.py: type and size are checked before a byte is read (a FIFO must not hang, /dev/zero must not
fill memory, a sparse file is refused from its size)."""

from __future__ import annotations

import os

import pytest

from fersynth.variants.files import FileRejected, check_regular, open_regular, read_bounded


def test_a_regular_file_is_read_whole(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"x" * 3000)
    assert read_bounded(path, max_bytes=3000) == b"x" * 3000
    assert check_regular(path, max_bytes=3000).st_size == 3000


def test_a_sparse_file_is_refused_from_its_size_before_reading(tmp_path):
    path = tmp_path / "x.png"
    with open(path, "wb") as handle:
        handle.truncate(3 << 30)  # 3 GB of holes: reading it would take 3 GB of memory
    with pytest.raises(FileRejected, match=r"too large: 3\.0 GB > 256\.0 MB"):
        read_bounded(path)
    with pytest.raises(FileRejected, match="too large"):
        check_regular(path)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "in.png"
    os.mkfifo(fifo)
    with pytest.raises(FileRejected, match="not a regular file: a FIFO"):
        read_bounded(fifo)  # would block forever with a plain open()
    with pytest.raises(FileRejected, match="a FIFO"):
        check_regular(fifo)


def test_a_link_to_dev_zero_and_a_folder_are_refused(tmp_path):
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(FileRejected, match="a character device"):
        read_bounded(tmp_path / "zero.png")
    with pytest.raises(FileRejected, match="a folder"):
        read_bounded(tmp_path)


def test_missing_and_looping_paths_are_reasons_not_tracebacks(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(FileRejected, match="unreadable file: Too many levels of symbolic links"):
        read_bounded(tmp_path / "loop")
    with pytest.raises(FileRejected, match="unreadable file: No such file"):
        check_regular(tmp_path / "absent.png")


def test_open_regular_streams_a_regular_file_and_refuses_the_rest_without_blocking(tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(b"a,b\n1,2\n")
    with open_regular(path, max_bytes=8) as handle:
        assert handle.readlines() == [b"a,b\n", b"1,2\n"]
    with pytest.raises(FileRejected, match="too large: 8 bytes > 7 bytes"):
        open_regular(path, max_bytes=7)
    os.mkfifo(tmp_path / "in.csv")
    with pytest.raises(FileRejected, match="not a regular file: a FIFO"):
        open_regular(tmp_path / "in.csv")
    with pytest.raises(FileRejected, match="unreadable file: No such file"):
        open_regular(tmp_path / "absent.csv")
