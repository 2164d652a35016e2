"""variants/files.py: type and size are checked before a byte is read (a FIFO must not hang, /dev/zero must not
fill memory, a sparse file is refused from its size)."""

from __future__ import annotations

import os
import re

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


# the InputError family: files a command cannot do without (a model config, a metrics file, a shard) --------
def test_read_json_bounded_names_what_and_where_in_one_line(tmp_path):
    from fersynth.errors import InputError
    from fersynth.variants.files import read_json_bounded

    path = tmp_path / "m.json"
    path.write_text('{"a": [1, 2]}')
    assert read_json_bounded(path, what="metrics file") == {"a": [1, 2]}
    path.write_text('{"a": [1, 2')
    with pytest.raises(InputError, match=rf"^metrics file {re.escape(str(path))}: not valid JSON \(Expecting"):
        read_json_bounded(path, what="metrics file")
    path.write_text("[" * 100_000)  # json's recursion, not a traceback
    with pytest.raises(InputError, match="nested too deeply"):
        read_json_bounded(path, what="metrics file")
    with open(path, "wb") as handle:
        handle.truncate(2 << 30)
    with pytest.raises(InputError, match=r"too large: 2\.0 GB > 16\.0 MB$"):
        read_json_bounded(path, what="metrics file")
    os.mkfifo(tmp_path / "fifo.json")
    fifo = re.escape(str(tmp_path / "fifo.json"))
    with pytest.raises(InputError, match=rf"^model config {fifo}: not a regular file: a FIFO$"):
        read_json_bounded(tmp_path / "fifo.json", what="model config")


def test_read_json_if_present_takes_only_absence_for_absence(tmp_path):
    from fersynth.errors import InputError
    from fersynth.variants.files import read_json_if_present

    assert read_json_if_present(tmp_path / "absent.json") is None
    (tmp_path / "dangling.json").symlink_to(tmp_path / "absent.json")
    assert read_json_if_present(tmp_path / "dangling.json") is None
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    with pytest.raises(InputError, match="not a regular file: a character device"):
        read_json_if_present(tmp_path / "zero.json")


def test_file_sha256_streams_and_refuses_what_is_not_a_bounded_regular_file(tmp_path):
    import hashlib

    from fersynth.errors import InputError
    from fersynth.variants.files import file_sha256

    path = tmp_path / "manifest.parquet"
    path.write_bytes(b"x" * (3 << 20))  # three blocks
    assert file_sha256(path, 3 << 20, "manifest") == hashlib.sha256(b"x" * (3 << 20)).hexdigest()
    with pytest.raises(InputError, match=r"manifest .*: too large: 3\.0 MB > 2\.0 MB"):
        file_sha256(path, 2 << 20, "manifest")
    os.mkfifo(tmp_path / "pipe.parquet")
    with pytest.raises(InputError, match="not a regular file: a FIFO"):
        file_sha256(tmp_path / "pipe.parquet", 3 << 20, "manifest")


def test_check_model_dir_bounds_weights_and_the_rest_apart(tmp_path):
    from fersynth.errors import InputError
    from fersynth.variants.files import check_model_dir

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    with open(tmp_path / "unet" / "diffusion_pytorch_model.safetensors", "wb") as handle:
        handle.truncate(3 << 30)  # 3 GB of weights is a model, not an attack
    check_model_dir(tmp_path, "model file")
    with open(tmp_path / "unet" / "config.json", "wb") as handle:
        handle.truncate(3 << 30)  # 3 GB of config is not
    with pytest.raises(InputError, match=r"config\.json: too large: 3\.0 GB > 256\.0 MB"):
        check_model_dir(tmp_path, "model file")
    (tmp_path / "unet" / "config.json").unlink()
    (tmp_path / "unet" / "config.json").symlink_to("/dev/zero")
    with pytest.raises(InputError, match=r"model file .*config\.json: not a regular file: a character device"):
        check_model_dir(tmp_path, "model file")
