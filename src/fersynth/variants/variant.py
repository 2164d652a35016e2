"""Dataset variants: a manifest (one row per image) plus images packed in a few parquet shards.

``VariantWriter`` streams images into shards as they are read (memory does not grow with the dataset)
and records rejected inputs in a quarantine list, so ``kept + quarantined == read`` always holds.
``Variant`` reads a finished variant back.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fersynth.atomic import atomic_path, write_json
from fersynth.errors import InputError
from fersynth.paths import VariantLayout
from fersynth.variants.files import MAX_MANIFEST_BYTES, MAX_SHARD_BYTES, open_input, read_input
from fersynth.variants.images import decode_image, to_8bit
from fersynth.variants.quarantine import Quarantine

__all__ = [
    "Variant",
    "VariantWriter",
    "Quarantine",
    "decode_image",
    "pixel_sha256",
    "raw_sha256",
    "encode_png",
]

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),  # unique within the variant; how shards are addressed
        ("shard", pa.string()),  # shard file name under images/
        ("sha256", pa.string()),  # of the decoded pixels (mode, size, bytes): same picture, same hash
        ("label", pa.int16()),  # index in label_space; null where the source has no emotion
        ("emotion", pa.string()),
        ("label_space", pa.string()),  # basic7 | casme2 | none
        ("dataset", pa.string()),
        ("split", pa.string()),  # train | val | test
        ("subject", pa.string()),
        ("clip", pa.string()),
        ("frame", pa.int32()),
        ("gender", pa.string()),
        ("age", pa.float32()),
        ("age_group", pa.string()),
        ("ethnicity", pa.string()),
        ("gender_confidence", pa.float32()),  # set where demographics are predicted (demographics-predict)
        ("ethnicity_confidence", pa.float32()),
        ("synthetic", pa.bool_()),
        ("generator", pa.string()),
        ("prompt", pa.string()),
        ("seed", pa.int64()),
        ("model", pa.string()),  # generated rows: checkpoint id or path (or the demo renderer)
        ("steps", pa.int32()),  # generated rows: denoising steps
        ("guidance", pa.float32()),  # generated rows: classifier-free guidance scale
        ("attempt", pa.int32()),  # generated rows: attempt number within its cell (rejected ones count)
        ("parent", pa.string()),
        ("source", pa.string()),  # native identifier: CSV row, relative path; joins demo ground truth
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),
        ("format", pa.string()),
    ]
)
MANIFEST_COLUMNS = tuple(MANIFEST_SCHEMA.names)
MANIFEST_FIELDS = frozenset(MANIFEST_COLUMNS)
EMPTY_ROW = dict.fromkeys(MANIFEST_COLUMNS)
SHARD_SCHEMA = pa.schema([("key", pa.string()), ("data", pa.binary())])

SPLIT_PRIORITY = {"test": 0, "val": 1, "train": 2}


def pixel_sha256(image: Image.Image) -> str:
    """Hash of what the image shows, not how it is encoded: re-encoding keeps the hash."""
    return raw_sha256(image.mode, image.size, image.tobytes())


def raw_sha256(mode: str, size: tuple[int, int], pixels: bytes) -> str:
    """:func:`pixel_sha256` from raw pixel bytes (row-major, PIL's layout for ``mode``)."""
    digest = hashlib.sha256(f"{mode}:{size[0]}x{size[1]}:".encode())
    digest.update(pixels)
    return digest.hexdigest()


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class VariantWriter:
    """Write a variant directory atomically: everything goes to a staging directory that replaces
    ``out_dir`` only when :meth:`commit` succeeds.

    >>> with VariantWriter(Path("data/original/fer2013")) as writer:  # doctest: +SKIP
    ...     writer.add({"source": "row 1", "label": 3, ...}, image)
    ...     writer.commit(report_extra={"dataset": "fer2013"})
    """

    def __init__(
        self,
        out_dir: Path,
        shard_max_bytes: int = 128 * 2**20,
        row_group_images: int = 2048,
        row_group_bytes: int = 16 * 2**20,
        report_name: str = "ingest.json",
        inputs: tuple[Path, ...] = (),
    ):
        self.out_dir = Path(out_dir)
        self.inputs = tuple(Path(p) for p in inputs)  # what the stage reads: the output may not overlap it
        self.report_name = report_name  # the stage's report beside the manifest (ingest.json, smote.json, ...)
        self.shard_max_bytes = shard_max_bytes
        self.row_group_images = row_group_images
        self.row_group_bytes = row_group_bytes  # what is buffered in memory at most, about
        self.rows: list[dict] = []
        self.quarantine = Quarantine()
        self.read = 0
        self._shard_index = -1
        self._shard_writer: pq.ParquetWriter | None = None
        self._shard_bytes = 0
        self._buffer: list[tuple[str, bytes]] = []
        self._buffer_bytes = 0
        self._keys: set[str] = set()
        self._demoted: set[str] = set()
        self._committed = False

    def __enter__(self) -> VariantWriter:
        self._atomic = atomic_path(self.out_dir, kind="variant", inputs=self.inputs)
        self.layout = VariantLayout(self._atomic.__enter__())
        self.layout.shards_dir.mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close_shard()
        if exc_type is None and not self._committed:
            exc_type, exc = RuntimeError, RuntimeError("VariantWriter closed without commit(): nothing was written")
            self._atomic.__exit__(exc_type, exc, None)
            raise exc
        self._atomic.__exit__(exc_type, exc, tb)

    # 1. intake -------------------------------------------------------------------------------
    def reject(self, source: str, reason: str, category: str = "bad_input") -> None:
        self.read += 1
        self.quarantine.add(source, reason, category)

    def has_key(self, key: str) -> bool:
        return key in self._keys

    def add(self, record: dict, image: Image.Image, encoded: bytes | None = None, fmt: str | None = None) -> dict:
        """Keep one image. ``encoded`` are the source's own bytes (kept as they are); without them the
        decoded image is stored as PNG. Returns the manifest row."""
        data = encoded if encoded is not None else encode_png(image)
        fmt = fmt or ("PNG" if encoded is None else (image.format or "unknown"))
        return self.add_encoded(record, data, pixel_sha256(image), image.size, image.mode, fmt)

    def add_encoded(self, record: dict, data: bytes, sha256: str, size: tuple[int, int], mode: str, fmt: str) -> dict:
        """Keep one already-encoded image whose pixel hash is known (e.g. computed by a worker process)."""
        unknown = set(record) - MANIFEST_FIELDS
        if unknown:
            raise KeyError(f"not manifest columns: {sorted(unknown)}; columns are {', '.join(MANIFEST_COLUMNS)}")
        self.read += 1
        key = record["key"]
        if key in self._keys:
            raise ValueError(f"duplicate key {key!r}: keys must be unique within a variant")
        self._keys.add(key)
        row = EMPTY_ROW | record
        row.update(
            sha256=sha256,
            width=size[0],
            height=size[1],
            mode=mode,
            format=fmt,
            synthetic=bool(record.get("synthetic", False)),
        )
        if self._shard_writer is None or self._shard_bytes >= self.shard_max_bytes:
            self._open_shard()
        row["shard"] = self._shard_name
        self._buffer.append((key, data))
        self._shard_bytes += len(data)
        self._buffer_bytes += len(data)
        if len(self._buffer) >= self.row_group_images or self._buffer_bytes >= self.row_group_bytes:
            self._flush()
        self.rows.append(row)
        return row

    def copy(self, row: pd.Series, data: bytes) -> dict:
        """Keep a row of another variant as it is (same key, bytes, hash and fields)."""
        record = {name: (None if _is_missing(row[name]) else row[name]) for name in MANIFEST_COLUMNS if name != "shard"}
        return self.add_encoded(
            record, data, row["sha256"], (int(row["width"]), int(row["height"])), row["mode"], row["format"]
        )

    # 2. shards -------------------------------------------------------------------------------
    def _open_shard(self) -> None:
        self._close_shard()
        self._shard_index += 1
        path = self.layout.shard(self._shard_index)
        self._shard_name = path.name
        self._shard_writer = pq.ParquetWriter(path, SHARD_SCHEMA, compression="none")
        self._shard_bytes = 0

    def _flush(self) -> None:
        if self._buffer and self._shard_writer is not None:
            keys, blobs = zip(*self._buffer, strict=True)
            table = pa.table({"key": list(keys), "data": list(blobs)}, schema=SHARD_SCHEMA)
            self._shard_writer.write_table(table)
            self._buffer, self._buffer_bytes = [], 0

    def _close_shard(self) -> None:
        self._flush()
        if self._shard_writer is not None:
            self._shard_writer.close()
            self._shard_writer = None

    def demote(self, demotions: dict[str, tuple[str, str]]) -> None:
        """Move kept rows to quarantine: ``{key: (reason, category)}`` (e.g. duplicates found after
        reading); their shard entries go too. ``read`` is unchanged: they were counted when added."""
        kept = []
        for row in self.rows:
            if row["key"] in demotions:
                reason, category = demotions[row["key"]]
                self.quarantine.add(row["source"], reason, category)
                self._demoted.add(row["key"])
            else:
                kept.append(row)
        self.rows = kept

    # 3. commit -------------------------------------------------------------------------------
    def commit(self, report_extra: dict | None = None) -> dict:
        """Write manifest, quarantine list and ingest report; returns the report."""
        self._close_shard()
        self._prune_shards()
        manifest = (
            pa.Table.from_pylist(self.rows, schema=MANIFEST_SCHEMA) if self.rows else MANIFEST_SCHEMA.empty_table()
        )
        pq.write_table(manifest, self.layout.manifest)
        self.quarantine.frame()[["source", "reason"]].to_csv(self.layout.quarantine, index=False)
        kept = len(self.rows)
        if kept + len(self.quarantine) != self.read:
            raise AssertionError(
                f"accounting broken: kept {kept} + quarantined {len(self.quarantine)} != read {self.read}"
            )
        by_category = self.quarantine.counts()
        report = {
            "read": self.read,
            "kept": kept,
            "quarantined": len(self.quarantine),
            "dropped_by_rule": by_category.get("rule", 0),
            "duplicates": by_category.get("duplicate", 0),
            "bad_input": by_category.get("bad_input", 0),
            "quarantine_reasons": self.quarantine.reasons(),
            "per_split": dict(Counter(row["split"] for row in self.rows)),
            "per_class": dict(Counter(row["emotion"] for row in self.rows if row["emotion"] is not None)),
        } | (report_extra or {})
        write_json(self.layout.root / self.report_name, report)
        self._committed = True
        return report

    def _prune_shards(self) -> None:
        """Rewrite the shards that hold demoted keys, one row group at a time (memory stays flat)."""
        if not self._demoted:
            return
        for shard in sorted(self.layout.shards_dir.glob("*.parquet")):
            keys = pq.read_table(shard, columns=["key"]).column("key").to_pylist()
            if self._demoted.isdisjoint(keys):
                continue
            pruned = shard.with_suffix(".pruning")
            source = pq.ParquetFile(shard)
            with pq.ParquetWriter(pruned, SHARD_SCHEMA, compression="none") as writer:
                for group in range(source.num_row_groups):
                    table = source.read_row_group(group)
                    mask = pa.array([key not in self._demoted for key in table.column("key").to_pylist()])
                    writer.write_table(table.filter(mask))
            source.close()
            pruned.replace(shard)


def _is_missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and other non-scalars
        return False


class NotAVariant(InputError, FileNotFoundError):
    """A directory given as a variant that has no ``manifest.parquet``."""


class Variant:
    """A finished variant on disk.

    >>> variant = Variant(Path("data/original/fer2013"))  # doctest: +SKIP
    >>> for row, image in variant.iter_images(variant.manifest.query("split == 'test'")): ...
    """

    def __init__(self, root: Path):
        self.layout = VariantLayout(Path(root))
        if not self.layout.manifest.is_file():
            raise NotAVariant(f"{root} is not a variant: no manifest.parquet")
        self._manifest: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        return self.layout.root.name

    @property
    def manifest(self) -> pd.DataFrame:
        if self._manifest is None:
            # one read of the whole file: pyarrow reopens a path per page, and a variant republished in
            # between would give it pages of two files
            try:
                data = read_input(self.layout.manifest, MAX_MANIFEST_BYTES, "manifest")
                table = pq.read_table(pa.BufferReader(data))
            except (OSError, ValueError, pa.ArrowException) as error:
                raise _damaged(self.layout.manifest, error) from None
            self._manifest = table.to_pandas()
        return self._manifest

    def iter_bytes(self, rows: pd.DataFrame | None = None) -> Iterator[tuple[pd.Series, bytes]]:
        """Yield (manifest row, encoded bytes), reading one shard at a time."""
        rows = self.manifest if rows is None else rows
        for shard_name, group in rows.groupby("shard", sort=True):
            wanted = set(group["key"])
            try:
                # one open file: one version; a FIFO or a link to /dev/zero in place of a shard is a one-line error
                with open_input(self.layout.shards_dir / shard_name, MAX_SHARD_BYTES, "image shard") as handle:
                    table = pq.read_table(handle)
            except (OSError, ValueError, pa.ArrowException) as error:
                raise _damaged(self.layout.shards_dir / shard_name, error) from None
            blobs = {
                k: d
                for k, d in zip(table.column("key").to_pylist(), table.column("data").to_pylist(), strict=True)
                if k in wanted
            }
            for _, row in group.iterrows():
                if row["key"] not in blobs:
                    raise InputError(
                        f"{self.layout.root}: {shard_name} has no image {row['key']!r}; the variant was replaced "
                        "while being read, or is damaged (`fersynth validate` checks every image)"
                    )
                yield row, blobs[row["key"]]

    def load_array(self, rows: pd.DataFrame, size: int, mode: str = "L") -> np.ndarray:
        """uint8 array (N, channels, size, size) of ``rows`` in their order, converted to ``mode``
        ("L" or "RGB") and resized (bilinear) where needed: decoded once, one byte per pixel."""
        from fersynth.log import progress

        channels = 1 if mode == "L" else 3
        out = np.zeros((len(rows), channels, size, size), dtype=np.uint8)
        position = {key: i for i, key in enumerate(rows["key"])}
        for row, image in progress(self.iter_images(rows), desc=f"decode {self.name}", total=len(rows)):
            image = to_8bit(image).convert(mode)
            if image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            out[position[row["key"]]] = np.asarray(image).reshape(size, size, channels).transpose(2, 0, 1)
        return out

    def iter_images(self, rows: pd.DataFrame | None = None) -> Iterator[tuple[pd.Series, Image.Image]]:
        for row, data in self.iter_bytes(rows):
            yield row, decode_image(data)


def _damaged(path: Path, error: Exception) -> InputError:
    """A manifest or shard pyarrow cannot read (cut short, overwritten, not parquet): one line, not pyarrow's
    traceback; ``fersynth validate`` names every damaged shard of a variant whose manifest reads."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return InputError(f"{path} is not a readable parquet file ({reason}): the variant is damaged; rebuild it")
