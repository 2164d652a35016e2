"""Versions of ``dvc.yaml``'s artifacts, so that ``dvc artifacts get <repo> <name>`` finds them.

DVC resolves an artifact through Git tags in GTO's format (``<name>@v<semver>``); ``dvc.yaml`` only declares
what may be versioned. :func:`register_changed` tags, at the commit ``HEAD``, every declared artifact whose
output hash in the committed ``dvc.lock`` differs from the one at its latest version (or that has none yet):
``v1.0.0`` first, then a minor bump. An unchanged model keeps its version, so running it twice adds nothing.
Share with ``git push --follow-tags`` (or ``git push origin <tag>``) and ``dvc push``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from fersynth import dvclock
from fersynth.errors import UsageError
from fersynth.log import get_logger
from fersynth.variants.files import read_input

log = get_logger(__name__)
MAX_DVC_YAML_BYTES = 16 << 20  # the project's dvc.yaml is ~40 KB


@dataclass(frozen=True)
class Registered:
    name: str
    version: str | None  # the version now pointing at the model (None: not registered, see reason)
    reason: str  # "new", "changed", "unchanged", or why it cannot be registered


def register_changed(repo: Path, dry_run: bool = False) -> list[Registered]:
    """Tag every changed artifact at ``HEAD`` (nothing with ``dry_run``); one :class:`Registered` each."""
    from gto.api import register

    repo = Path(repo)
    _require_committed_lock(repo)
    locks: dict[str, dict[str, str]] = {}  # commit -> its dvc.lock's output hashes: read once per commit

    def hashes_at(commit: str) -> dict[str, str]:
        if commit not in locks:
            locks[commit] = _lock_hashes(_git(repo, "show", f"{commit}:dvc.lock"))
        return locks[commit]

    head_lock = hashes_at("HEAD")
    pipeline = read_input(repo / "dvc.yaml", MAX_DVC_YAML_BYTES, "pipeline")  # a link in a checkout could be anything
    declared = (yaml.safe_load(pipeline) or {}).get("artifacts") or {}
    results = []
    for name, artifact in declared.items():
        current = head_lock.get(_normal(artifact["path"]))
        if current is None:
            results.append(Registered(name, None, f"{artifact['path']} is no output in HEAD's dvc.lock"))
            continue
        latest = _latest(repo, name)
        if latest is not None and hashes_at(latest.commit_hexsha).get(_normal(artifact["path"])) == current:
            results.append(Registered(name, latest.version, "unchanged"))
            continue
        version = "v1.0.0" if latest is None else None
        if dry_run:
            results.append(Registered(name, version or "next minor", "new" if latest is None else "changed"))
            continue
        tag = register(
            repo, name, "HEAD", version=version, bump_minor=latest is not None,
            message=f"{name}: {artifact.get('desc', artifact['path'])} (output hash {current})",
        )  # fmt: skip
        results.append(Registered(name, tag.version, "new" if latest is None else "changed"))
    for result in results:
        log.info("model versions: %s %s (%s)", result.name, result.version or "-", result.reason)
    return results


def _latest(repo: Path, name: str):
    """The artifact's highest registered version (GTO's object with ``.version`` and ``.commit_hexsha``), or None."""
    from gto.api import find_latest_version
    from gto.exceptions import ArtifactNotFound

    try:
        return find_latest_version(repo, name)
    except ArtifactNotFound:
        return None


def _require_committed_lock(repo: Path) -> None:
    if _git(repo, "status", "--porcelain", "--", "dvc.lock", "dvc.yaml").strip():
        raise UsageError("dvc.lock or dvc.yaml has uncommitted changes: commit them first (a version names a commit)")


def _lock_hashes(text: str) -> dict[str, str]:
    """Output path -> its hash (md5) across every stage of a ``dvc.lock`` text."""
    return dvclock.outs(dvclock.parse(text))


def _normal(path: str) -> str:
    return str(Path(path)).rstrip("/")


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(f"git {' '.join(args)}: {done.stderr.strip().splitlines()[-1] if done.stderr else 'failed'}")
    return done.stdout
