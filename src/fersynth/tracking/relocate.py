"""A sqlite MLflow store that moved with its repository (a clone elsewhere, another machine): its stored artifact
locations still name the old place. :func:`relocate_artifacts` rewrites them to ``mlartifacts/`` beside the
database; :mod:`fersynth.tracking` calls it under the store lock each time it opens the store, and ``fersynth
mlflow-relocate`` (:func:`fersynth.tracking.relocate_store`) does it alone, e.g. before ``mlflow ui``."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from fersynth.log import get_logger
from fersynth.paths import mlflow_artifacts_dir

# the artifact root (a file:// URI) an experiment's stored locations were written for: relocation's anchor
ARTIFACT_ROOT_TAG = "fersynth.artifact_root"
# locations written by fersynth before plain file:// ones: read by its own MLflow plugin, now rewritten
LEGACY_ARTIFACT_ROOT = "fersynth-repo:/mlartifacts"
# every column of MLflow's schema that holds an artifact location (test_tracking checks none is missed)
LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("trace_tags", "value"),
)

logger = get_logger(__name__)


def relocate_artifacts(database: Path) -> int:
    """Point the artifact locations stored in the sqlite ``database`` at ``mlartifacts/`` beside it, wherever
    they were written (the repository was moved or copied; or fersynth's older ``fersynth-repo:`` locations).
    Only locations under an artifact root recorded on an experiment (:data:`ARTIFACT_ROOT_TAG`) are touched.
    Returns how many values changed; nothing is written when all are in place. The caller holds the store lock."""
    if not database.is_file():
        return 0
    here = mlflow_artifacts_dir(database.parent).as_uri()
    with closing(sqlite3.connect(database)) as db, db:
        if not _has_column(db, "experiment_tags", "value"):
            return 0  # a database MLflow has not migrated yet: nothing stored
        tagged = db.execute("select value from experiment_tags where key = ?", (ARTIFACT_ROOT_TAG,)).fetchall()
        olds = sorted(({value for (value,) in tagged} | {LEGACY_ARTIFACT_ROOT}) - {here})
        changed = sum(
            _replace_prefix(db, table, column, old, here)
            for table, column in LOCATION_COLUMNS
            if _has_column(db, table, column)
            for old in olds
        )
        _tag_artifact_root(db, here)
    if changed:
        logger.info("artifact locations in %s now point to %s (%d values rewritten)", database, here, changed)
    return changed


def _has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return column in {row[1] for row in db.execute(f"pragma table_info({table})")}


def _replace_prefix(db: sqlite3.Connection, table: str, column: str, old: str, new: str) -> int:
    """Rewrite ``old`` to ``new`` at the start of ``column``'s values that are ``old`` or lie under it (compared
    with substr: LIKE would read ``%`` and ``_`` in a path as wildcards). Reads first: the usual answer is none,
    and a write would wait for (or block) every other client of the database."""
    where = f"{column} = ? or substr({column}, 1, ?) = ?"
    arguments = (old, len(old) + 1, f"{old}/")
    if db.execute(f"select 1 from {table} where {where} limit 1", arguments).fetchone() is None:
        return 0
    return db.execute(
        f"update {table} set {column} = ? || substr({column}, ?) where {where}", (new, len(old) + 1, *arguments)
    ).rowcount


def _tag_artifact_root(db: sqlite3.Connection, here: str) -> None:
    """Record ``here`` as the artifact root of the experiments whose location lies under it (and lacks it)."""
    untagged = db.execute(
        "select experiment_id from experiments where substr(artifact_location, 1, ?) = ? and experiment_id not in "
        "(select experiment_id from experiment_tags where key = ? and value = ?)",
        (len(here) + 1, f"{here}/", ARTIFACT_ROOT_TAG, here),
    ).fetchall()
    db.executemany(
        "insert or replace into experiment_tags (key, value, experiment_id) values (?, ?, ?)",
        [(ARTIFACT_ROOT_TAG, here, experiment_id) for (experiment_id,) in untagged],
    )
