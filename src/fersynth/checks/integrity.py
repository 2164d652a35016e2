"""Does every image of a variant still hold what its manifest says? One row per manifest row (and per
stray shard entry), read one shard at a time: the check ``fersynth validate`` runs on every variant, so
a corrupted object pulled from a DVC remote fails the suite instead of training."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pyarrow.parquet as pq

from fersynth.log import progress
from fersynth.variants.files import MAX_SHARD_BYTES, FileRejected, open_regular
from fersynth.variants.images import decode_image
from fersynth.variants.variant import Variant, pixel_sha256

COLUMNS = ["key", "shard", "intact", "problem"]


def check_images(variant: Variant) -> pd.DataFrame:
    """``key, shard, intact, problem`` for every manifest row, plus a row for each shard entry the manifest
    does not list. ``problem`` is empty for intact images, else one of: ``missing shard``, ``unreadable
    shard``, ``not in its shard``, ``twice in its shard``, ``does not decode``, ``pixels differ from
    sha256``, ``size or mode differ``, ``not in the manifest``."""
    manifest = variant.manifest
    rows: list[tuple[str, str, bool, str]] = []
    listed = set(manifest["key"])
    shard_names = set(manifest["shard"].dropna())
    if variant.layout.shards_dir.is_dir():
        shard_names |= {path.name for path in variant.layout.shards_dir.glob("*.parquet")}
    bar = progress(None, desc=f"check images {variant.name}", total=len(manifest))
    with bar:
        for shard_name in sorted(shard_names):
            group = manifest[manifest["shard"] == shard_name]
            rows += _check_shard(variant, shard_name, group, listed)
            bar.update(len(group))
    missing_shard = manifest[manifest["shard"].isna()]
    rows += [(key, "", False, "not in its shard: no shard named") for key in missing_shard["key"]]
    return pd.DataFrame(rows, columns=COLUMNS)


def _check_shard(variant: Variant, shard_name: str, group: pd.DataFrame, listed: set[str]) -> list[tuple]:
    path = variant.layout.shards_dir / shard_name
    if not path.exists():
        return [(key, shard_name, False, "missing shard") for key in group["key"]]
    try:
        handle = open_regular(path, MAX_SHARD_BYTES)  # a FIFO would hang the check, /dev/zero fill memory
    except FileRejected as error:
        return [(key, shard_name, False, f"unreadable shard: {error}") for key in group["key"]]
    try:
        with handle:
            table = pq.read_table(handle, columns=["key", "data"])
        keys, blobs = table.column("key").to_pylist(), table.column("data").to_pylist()
    except Exception as error:  # noqa: BLE001 (a damaged parquet file raises many kinds of errors)
        return [(key, shard_name, False, f"unreadable shard: {type(error).__name__}") for key in group["key"]]
    counts = Counter(keys)
    data = dict(zip(keys, blobs, strict=True))
    rows = [(key, shard_name, False, "not in the manifest") for key in sorted(set(keys) - listed)]
    for row in group.itertuples(index=False):
        rows.append((row.key, shard_name, *_check_image(row, counts[row.key], data.get(row.key))))
    return rows


def _check_image(row, count: int, blob: bytes | None) -> tuple[bool, str]:
    if count == 0:
        return False, "not in its shard"
    if count > 1:
        return False, "twice in its shard"
    try:
        image = decode_image(blob)
    except Exception as error:  # noqa: BLE001 (hostile bytes: whatever the decoder raises)
        return False, f"does not decode: {type(error).__name__}"
    if pixel_sha256(image) != row.sha256:
        return False, "pixels differ from sha256"
    if (image.width, image.height, image.mode) != (row.width, row.height, row.mode):
        return False, "size or mode differ"
    return True, ""


def summarize(checked: pd.DataFrame, examples: int = 5) -> dict:
    """``rows``, ``intact``, problems by kind and the first few damaged keys, for the metrics JSON."""
    damaged = checked[~checked["intact"]]
    kinds = damaged["problem"].str.split(":").str[0]
    return {
        "rows": len(checked),
        "intact": int(checked["intact"].sum()),
        "problems": {kind: int(n) for kind, n in sorted(Counter(kinds).items())},
        "examples": [f"{r.key}: {r.problem}" for r in damaged.head(examples).itertuples(index=False)],
    }
