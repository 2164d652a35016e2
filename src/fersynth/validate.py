"""``fersynth validate VARIANT``: a Great Expectations suite over a variant's manifest.

Checks that every image decodes to the pixels its manifest hash names (a corrupted object pulled from a
remote fails here), label and split domains, unique pixel hashes, that no hash or subject sits in two
splits, and per-class count bounds; writes ``metrics/quality/<variant>.json`` and Data Docs HTML. A failing
suite raises :class:`ValidationFailed`, which fails the DVC stage.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from fersynth.atomic import atomic_path, write_json
from fersynth.integrity import check_images
from fersynth.integrity import summarize as summarize_integrity
from fersynth.labels import AGE_GROUPS, ETHNICITIES, GENDERS, LABEL_SPACES
from fersynth.log import get_logger
from fersynth.offline_docs import make_offline, make_reproducible
from fersynth.variant import Variant

log = get_logger(__name__)


@dataclass(frozen=True)
class SuiteConfig:
    """``params.yaml: validate.suites.<name>``. ``label_space`` is basic7, casme2 or none (no emotion,
    e.g. UTKFace, whose demographics are checked instead); class bounds apply to every class of the
    space, per split when ``per_split`` is true."""

    label_space: str = "basic7"
    splits: tuple[str, ...] = ("train", "val", "test")
    min_per_class: int = 1
    max_per_class: int | None = None
    per_split: bool = False
    subjects_disjoint: bool = False
    synthetic_splits: tuple[str, ...] | None = None  # where synthetic rows may be; None: anywhere
    balanced_splits: tuple[str, ...] = ()  # splits whose classes must have exactly equal counts
    balanced_cells: tuple[str, ...] = ()  # columns whose every combination must hold exactly cell_count rows
    cell_count: int = 0
    not_in: tuple[str, ...] = ()  # variant directories: none of our pictures may be in their train or val split
    derive_not_in: bool = False  # the evaluator's: `fersynth validate` adds fersynth.leakage.evaluator_not_in
    require_demographics: bool = True  # label_space none: gender / ethnicity / age group must be there (UTKFace)

    def __post_init__(self) -> None:
        if self.label_space not in (*LABEL_SPACES, "none"):
            raise ValueError(f"label_space must be one of {[*LABEL_SPACES, 'none']}, got {self.label_space!r}")


class ValidationFailed(RuntimeError):
    pass


DOCS_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _run_id(position: int):
    """A fixed run identity per batch. The Data Docs are a DVC output: GX's default (the wall clock) changed
    their bytes on every run, and equal times would leave their order to the file system. So batch k's run is
    dated DOCS_EPOCH + k seconds: the page lists batches in the order they were checked."""
    from great_expectations.core.run_identifier import RunIdentifier

    return RunIdentifier(run_name="fersynth-validate", run_time=DOCS_EPOCH + timedelta(seconds=position))


def _crosses(manifest: pd.DataFrame, column: str) -> pd.DataFrame:
    """One row per value of ``column`` with how many distinct splits it appears in."""
    present = manifest.dropna(subset=[column])
    grouped = present.groupby(column)["split"].nunique().rename("n_splits").reset_index()
    return grouped.astype({column: "object"})


def build_batches(manifest: pd.DataFrame, config: SuiteConfig) -> dict[str, tuple[pd.DataFrame, list]]:
    """Tables to validate and their expectations: the manifest itself plus grouped tables for the
    cross-split checks (GX has no 'distinct values per group' expectation on pandas)."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    manifest = manifest.astype(
        {c: "object" for c in ("emotion", "split", "sha256", "gender", "ethnicity", "age_group")}
    )
    checks = [
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(config.splits)),
        gxe.ExpectColumnValuesToNotBeNull(column="split"),
        gxe.ExpectColumnValuesToBeUnique(column="sha256"),
        gxe.ExpectColumnValuesToBeUnique(column="key"),
        gxe.ExpectColumnValuesToNotBeNull(column="sha256"),
    ]
    if config.label_space == "none":
        checks.append(gxe.ExpectColumnValuesToBeNull(column="label"))
        if config.require_demographics:
            checks += [
                gxe.ExpectColumnValuesToBeInSet(column="gender", value_set=list(GENDERS)),
                gxe.ExpectColumnValuesToBeInSet(column="ethnicity", value_set=list(ETHNICITIES)),
                gxe.ExpectColumnValuesToBeInSet(column="age_group", value_set=list(AGE_GROUPS)),
                gxe.ExpectColumnValuesToNotBeNull(column="gender"),
            ]
    else:
        classes = LABEL_SPACES[config.label_space]
        checks += [
            gxe.ExpectColumnValuesToBeInSet(column="emotion", value_set=list(classes)),
            gxe.ExpectColumnValuesToNotBeNull(column="emotion"),
            gxe.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=len(classes) - 1),
            gxe.ExpectColumnValuesToBeInSet(column="label_space", value_set=[config.label_space]),
        ]
        bounds = f"at least {config.min_per_class} rows"
        if config.max_per_class is not None:
            bounds = f"between {config.min_per_class} and {config.max_per_class} rows"
        for index, emotion in enumerate(classes):
            conditions = [(Column("label") == index, "")]
            if config.per_split:
                conditions = [
                    ((Column("label") == index) & (Column("split") == split), f" in {split}") for split in config.splits
                ]
            for condition, where in conditions:
                checks.append(
                    gxe.ExpectTableRowCountToBeBetween(
                        min_value=config.min_per_class,
                        max_value=config.max_per_class,
                        row_condition=condition,
                        description=f"Class {emotion} (label {index}){where}: {bounds}.",  # Data Docs show it
                    )
                )
    batches = {
        "manifest": (manifest, checks),
        "sha256_splits": (
            _crosses(manifest, "sha256"),
            [gxe.ExpectColumnValuesToBeBetween(column="n_splits", min_value=1, max_value=1)],
        ),
    }
    if config.synthetic_splits is not None:
        is_synthetic = Column("synthetic") == True  # noqa: E712 (a GX row condition, not a truth test)
        checks.append(
            gxe.ExpectColumnValuesToBeInSet(
                column="split", value_set=list(config.synthetic_splits), row_condition=is_synthetic
            )
        )
    for split in config.balanced_splits:
        counts = manifest[manifest["split"] == split].groupby("label").size().rename("count").reset_index()
        n_classes = len(LABEL_SPACES.get(config.label_space, ()))
        batches[f"balance_{split}"] = (
            counts,
            [
                gxe.ExpectColumnUniqueValueCountToBeBetween(column="count", min_value=1, max_value=1),
                gxe.ExpectTableRowCountToEqual(value=n_classes),
            ],
        )
    if config.balanced_cells:
        batches["balanced_cells"] = _cell_counts(manifest, config)
    if config.not_in:
        seen: set[str] = set()
        for other in config.not_in:
            rows = Variant(Path(other)).manifest
            seen |= set(rows.loc[rows["split"].isin(["train", "val"]), "sha256"])
        checks.append(gxe.ExpectColumnValuesToNotBeInSet(column="sha256", value_set=sorted(seen)))
    if config.subjects_disjoint:
        batches["subject_splits"] = (
            _crosses(manifest, "subject"),
            [
                gxe.ExpectColumnValuesToBeBetween(column="n_splits", min_value=1, max_value=1),
                gxe.ExpectTableRowCountToBeBetween(min_value=len(config.splits)),
            ],
        )
    return batches


def integrity_batch(checked: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """Every image decodes to the pixels its manifest hash names (``fersynth.integrity``)."""
    import great_expectations.expectations as gxe

    frame = checked[["key", "intact", "problem"]].astype({"key": "object", "intact": "object", "problem": "object"})
    return frame, [gxe.ExpectColumnValuesToBeInSet(column="intact", value_set=[True])]


def _cell_counts(manifest: pd.DataFrame, config: SuiteConfig) -> tuple[pd.DataFrame, list]:
    """Rows per combination of ``balanced_cells`` over each column's whole domain (label space,
    gender, age group, ethnicity; other columns: the values present), so an empty cell counts 0."""
    import itertools

    import great_expectations.expectations as gxe

    domains = {
        "emotion": LABEL_SPACES.get(config.label_space, ()),
        "gender": GENDERS,
        "age_group": AGE_GROUPS,
        "ethnicity": ETHNICITIES,
    }
    columns = list(config.balanced_cells)
    values = [domains.get(c) or sorted(manifest[c].dropna().unique()) for c in columns]
    cells = pd.MultiIndex.from_tuples(list(itertools.product(*values)), names=columns)
    counts = manifest.groupby(columns).size().reindex(cells, fill_value=0).rename("count").reset_index()
    checks = [
        gxe.ExpectColumnValuesToBeBetween(column="count", min_value=config.cell_count, max_value=config.cell_count),
        gxe.ExpectTableRowCountToEqual(value=len(cells)),
    ]
    return counts.astype({c: "object" for c in columns}), checks


def validate_variant(
    variant_dir: Path, config: SuiteConfig, metrics_path: Path, docs_dir: Path, name: str | None = None
) -> dict:
    """Run the suite; write metrics and Data Docs; raise :class:`ValidationFailed` on any failure."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # offline machines: no usage pings
    import great_expectations as gx

    variant = Variant(variant_dir)
    name = name or variant.name
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas(f"{name}_source")
    scratch = Path(tempfile.mkdtemp(prefix="gx-docs-"))
    context.add_data_docs_site(
        site_name="fersynth",
        site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(scratch)},
        },
    )
    summary: dict = {"variant": name, "rows": len(variant.manifest), "batches": {}}
    if config.not_in:
        summary["not_in"] = list(config.not_in)
    batches = build_batches(variant.manifest, config)
    checked = check_images(variant)
    batches["integrity"] = integrity_batch(checked)
    summary["integrity"] = summarize_integrity(checked)
    for position, (batch_name, (frame, expectations)) in enumerate(batches.items()):
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}.{batch_name}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(
                name=f"{name}.{batch_name}",
                suite=suite,
                data=source.add_dataframe_asset(batch_name).add_batch_definition_whole_dataframe("all"),
            )
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(name=f"{name}.{batch_name}", validation_definitions=[definition], result_format="BASIC")
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=_run_id(position))
        summary["batches"][batch_name] = [_describe(r) for run in result.run_results.values() for r in run.results]
    context.build_data_docs(site_names=["fersynth"])  # once, from every checkpoint's stored results
    external = make_offline(scratch)  # vendored jQuery / Bootstrap / icons: the docs render without internet
    make_reproducible(scratch)  # the same bytes every run: random element ids and load times pinned
    if external:
        log.warning("validate %s: Data Docs still fetch %s (a newer GX?)", name, ", ".join(external))
    failures = [r for results in summary["batches"].values() for r in results if not r["success"]]
    summary |= {
        "success": not failures,
        "evaluated": sum(len(v) for v in summary["batches"].values()),
        "failed": len(failures),
    }
    write_json(metrics_path, summary)
    with atomic_path(docs_dir, kind="docs") as tmp:
        shutil.copytree(scratch, tmp)
    shutil.rmtree(scratch, ignore_errors=True)
    log.info(
        "validate %s: %d expectations, %d failed; Data Docs in %s",
        name,
        summary["evaluated"],
        len(failures),
        docs_dir / "index.html",
    )
    if failures:
        for failure in failures:
            check = f"{failure['check']} [{failure['expectation']}]" if "check" in failure else failure["expectation"]
            log.error("validate %s: FAILED %s; observed %s", name, check, failure["observed"])
        raise ValidationFailed(f"{name}: {len(failures)} expectation(s) failed; see {metrics_path}")
    return summary


def _describe(result) -> dict:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "condition_parser")}
    condition = kwargs.pop("row_condition", None)
    label = f"{config.type}({', '.join(f'{k}={v}' for k, v in sorted(kwargs.items()) if k != 'value_set')})"
    if condition:
        label += f" where {_condition_text(condition)}"
    observed = result.result.get("observed_value", result.result.get("unexpected_count"))
    described = {"check": config.description} if config.description else {}
    return {
        "expectation": label,
        **described,
        "success": bool(result.success),
        "observed": observed if isinstance(observed, int | float | str | type(None)) else str(observed),
    }


def _condition_text(condition) -> str:
    """``{'type': 'and', 'conditions': [...]}`` (GX's serialised row condition) -> ``label == 0 & ...``."""
    if isinstance(condition, dict) and "conditions" in condition:
        return f" {condition.get('type', 'and')} ".join(_condition_text(c) for c in condition["conditions"])
    if isinstance(condition, dict) and "column" in condition:
        return f"{condition['column']['name']} {condition['operator']} {condition['parameter']!r}"
    return str(condition)
