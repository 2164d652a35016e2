"""Reading ``dvc.lock``, once for everyone: the output rule (which tracked files a stage writes), the lock guard
(is a lock DVC can read?) and model versions (each output's hash at a commit) parse it here.

PyYAML's C loader reads the project's ~0.3 MB lock in 0.1 s where the pure-Python one takes 1.5 s; a lock larger
than :data:`MAX_BYTES` is not parsed at all.
"""

from __future__ import annotations

from pathlib import Path

import yaml

NAME = "dvc.lock"
MAX_BYTES = 64 << 20  # a lock larger than this is not parsed (the project's is ~0.3 MB)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse(data: bytes | str) -> dict:
    """The lock's YAML as a mapping (``{}`` for an empty one); ``yaml.YAMLError`` / ``ValueError`` when it is
    not YAML or not a mapping."""
    parsed = yaml.load(data, Loader=_LOADER)
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise ValueError(f"{NAME} is not a mapping")
    return parsed


def read(root: Path) -> dict | None:
    """``root/dvc.lock`` parsed; None when it is missing, not a regular file, larger than :data:`MAX_BYTES` or
    not readable as a lock."""
    lock = Path(root) / NAME
    if not lock.is_file() or lock.is_symlink() or lock.stat().st_size > MAX_BYTES:
        return None
    try:
        return parse(lock.read_bytes())
    except (yaml.YAMLError, ValueError, UnicodeDecodeError, OSError):
        return None


def outs(lock: dict) -> dict[str, str]:
    """Every output path a parsed lock records (``foreach`` stages expanded, as DVC wrote them, no trailing
    slash) -> its hash (md5); a malformed entry is skipped."""
    found = {}
    for stage in (lock.get("stages") or {}).values():
        for out in (stage.get("outs") or ()) if isinstance(stage, dict) else ():
            if isinstance(out, dict) and isinstance(out.get("path"), str):
                found[str(Path(out["path"])).rstrip("/")] = out.get("md5") or out.get("hash", "")
    return found
