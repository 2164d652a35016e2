"""``fersynth validate VARIANT``: a Great Expectations suite over a variant's manifest.

Checks that every image decodes to the pixels its manifest hash names (a corrupted object pulled from a
remote fails here), label and split domains, unique pixel hashes, that no hash or subject sits in two
splits, per-class count bounds and a stated bound on class imbalance (largest / smallest class); writes
``metrics/quality/<suite>.json`` and the suite's pages of the one Data Docs site (:mod:`fersynth.checks.data_docs`).
A failing suite raises :class:`ValidationFailed`, which fails the DVC stage.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fersynth.atomic import write_json
from fersynth.checks.data_docs import index_entry, publish_suite, run_identity
from fersynth.checks.integrity import check_images
from fersynth.checks.integrity import summarize as summarize_integrity
from fersynth.checks.offline_docs import make_offline, make_reproducible
from fersynth.config import at_least
from fersynth.errors import UsageError
from fersynth.log import get_logger
from fersynth.variants.labels import AGE_GROUPS, ETHNICITIES, GENDERS, LABEL_SPACES
from fersynth.variants.variant import Variant

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
    derive_not_in: bool = False  # the balanced set's: `fersynth validate` adds checks.leakage.balanced_set_not_in
    require_demographics: bool = True  # label_space none: gender / ethnicity / age group must be there (UTKFace)
    # Class balance: rows of the largest class / rows of the smallest present class (absent classes are
    # min_per_class's concern), over the rows of class_ratio_splits (empty: every split), at most
    # max_class_ratio (None: reported in the metrics, not checked); class_ratio_note says why the bound
    # is what it is (a source imbalanced by nature) and shows in the Data Docs beside the check.
    max_class_ratio: float | None = None
    class_ratio_splits: tuple[str, ...] = ()
    class_ratio_note: str = ""

    def __post_init__(self) -> None:
        if self.label_space not in (*LABEL_SPACES, "none"):
            raise ValueError(f"label_space must be one of {[*LABEL_SPACES, 'none']}, got {self.label_space!r}")
        if self.max_class_ratio is not None:
            if isinstance(self.max_class_ratio, bool) or not isinstance(self.max_class_ratio, int | float):
                raise ValueError(f"max_class_ratio must be a number, got {self.max_class_ratio!r}")
            if not (math.isfinite(self.max_class_ratio) and self.max_class_ratio >= 1):
                raise ValueError(f"max_class_ratio is largest / smallest class, at least 1; got {self.max_class_ratio}")
            if self.label_space == "none":
                raise ValueError("max_class_ratio needs emotion labels; label_space none has none")
        unknown = sorted(set(self.class_ratio_splits) - set(self.splits))
        if unknown:
            raise ValueError(f"class_ratio_splits {unknown} are not among splits {list(self.splits)}")
        at_least("suite", 0, min_per_class=self.min_per_class, cell_count=self.cell_count)
        if self.max_per_class is not None:
            at_least("suite", max(self.min_per_class, 0), max_per_class=self.max_per_class)


class ValidationFailed(RuntimeError):
    pass


def suite_for_variant(suites: dict, variant: Path, root: Path) -> str | None:
    """The suite of ``configs/validate.yaml`` ``suites`` whose ``variant`` (relative to the project ``root``) is
    ``variant``; None when none is. ``fersynth validate data/filtered/fer2013`` by hand must check and
    write ``filtered_fer2013``, not the suite named like the directory (``fer2013``): that overwrote
    another suite's outputs and left ``dvc status`` dirty."""
    target = Path(variant).resolve()
    found = sorted(
        name
        for name, spec in (suites or {}).items()
        if isinstance(spec, dict) and spec.get("variant") and (root / spec["variant"]).resolve() == target
    )
    if len(found) > 1:
        raise UsageError(f"{variant} is the variant of suites {found}; pick one with --suite")
    return found[0] if found else None


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
    if config.max_class_ratio is not None:
        batches["class_balance"] = class_balance_batch(manifest, config)
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


def class_counts(manifest: pd.DataFrame, config: SuiteConfig) -> pd.DataFrame:
    """Rows per present class over ``class_ratio_splits`` (every split when empty), largest first, and each
    class's multiple of the smallest (``ratio_to_smallest``; its maximum is the suite's imbalance ratio)."""
    scope = manifest[manifest["split"].isin(config.class_ratio_splits)] if config.class_ratio_splits else manifest
    counts = scope.dropna(subset=["emotion"]).groupby("emotion").size().rename("count").reset_index()
    counts = counts.sort_values(["count", "emotion"], ascending=[False, True], ignore_index=True)
    counts["ratio_to_smallest"] = counts["count"] / counts["count"].min() if len(counts) else []
    return counts.astype({"emotion": "object"})


def class_balance(manifest: pd.DataFrame, config: SuiteConfig) -> dict:
    """The suite's imbalance for the metrics: ratio, its largest and smallest class, and the bound."""
    counts = class_counts(manifest, config)
    ratio = float(counts["ratio_to_smallest"].max()) if len(counts) else None
    return {
        "ratio": None if ratio is None else round(ratio, 4),
        "largest": counts["emotion"].iloc[0] if len(counts) else None,
        "smallest": counts["emotion"].iloc[-1] if len(counts) else None,
        "max_ratio": config.max_class_ratio,
        "splits": list(config.class_ratio_splits or config.splits),
    }


def class_balance_batch(manifest: pd.DataFrame, config: SuiteConfig) -> tuple[pd.DataFrame, list]:
    """The largest class holds at most ``max_class_ratio`` times the rows of the smallest present one. GX
    has no ratio-of-value-counts expectation, so it checks the maximum of the per-class table's
    ``ratio_to_smallest``: the Data Docs show the ratio as the observed value, and the description names
    the two classes it compares and the note that explains the bound."""
    import great_expectations.expectations as gxe

    counts = class_counts(manifest, config)
    where = f" in {', '.join(config.class_ratio_splits)}" if config.class_ratio_splits else ""
    extremes = ""
    if len(counts):
        largest, smallest = counts.iloc[0], counts.iloc[-1]
        extremes = f" (here {largest['emotion']} {largest['count']} vs {smallest['emotion']} {smallest['count']} rows)"
    description = (
        f"Class balance{where}: the largest class has at most {config.max_class_ratio:g} times the rows of the"
        f" smallest present class{extremes}.{' ' + config.class_ratio_note if config.class_ratio_note else ''}"
    )
    check = gxe.ExpectColumnMaxToBeBetween(
        column="ratio_to_smallest", min_value=1, max_value=config.max_class_ratio, description=description
    )
    return counts, [check]


def integrity_batch(checked: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """Every image decodes to the pixels its manifest hash names (``fersynth.checks.integrity``)."""
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
    variant_dir: Path, config: SuiteConfig, metrics_path: Path, site: Path, name: str | None = None
) -> dict:
    """Run the suite; write its metrics and its pages of the Data Docs ``site`` (``fersynth data-docs`` then
    lists them in the site's index); raise :class:`ValidationFailed` on any failure."""
    variant = Variant(variant_dir)
    name = name or variant.name
    summary: dict = {"variant": name, "rows": len(variant.manifest), "batches": {}}
    if config.not_in:
        summary["not_in"] = list(config.not_in)
    if config.label_space != "none":
        summary["class_balance"] = class_balance(variant.manifest, config)
    batches = build_batches(variant.manifest, config)
    checked = check_images(variant)
    batches["integrity"] = integrity_batch(checked)
    summary["integrity"] = summarize_integrity(checked)
    scratch = Path(tempfile.mkdtemp(prefix="gx-docs-"))
    try:
        summary["batches"], entries = _run_batches(name, batches, variant.layout.manifest, scratch)
        publish_suite(scratch, site, name, entries)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    failures = [r for results in summary["batches"].values() for r in results if not r["success"]]
    summary |= {
        "success": not failures,
        "evaluated": sum(len(v) for v in summary["batches"].values()),
        "failed": len(failures),
    }
    write_json(metrics_path, summary)
    log.info(
        "validate %s: %d expectations, %d failed; Data Docs pages in %s",
        name,
        summary["evaluated"],
        len(failures),
        site,
    )
    if failures:
        for failure in failures:
            check = f"{failure['check']} [{failure['expectation']}]" if "check" in failure else failure["expectation"]
            log.error("validate %s: FAILED %s; observed %s", name, check, failure["observed"])
        raise ValidationFailed(f"{name}: {len(failures)} expectation(s) failed; see {metrics_path}")
    return summary


def _run_batches(
    name: str, batches: dict[str, tuple[pd.DataFrame, list]], manifest: Path, scratch: Path
) -> tuple[dict[str, list[dict]], list[dict]]:
    """Validate every batch as suite ``<name>.<batch>`` in an in-memory GX context and build its Data Docs
    pages into ``scratch`` (offline, reproducible). Returns each batch's described results and the suite's
    rows of the site index."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # offline machines: no usage pings
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas(f"{name}_source")
    context.add_data_docs_site(
        site_name="fersynth",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(scratch)},
        },
    )
    described, entries = {}, []
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
        result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_identity(manifest, position))
        described[batch_name] = [_describe(r) for run in result.run_results.values() for r in run.results]
        entries += [index_entry(key, run) for key, run in result.run_results.items()]
    context.build_data_docs(site_names=["fersynth"], build_index=False)  # the site's index: `fersynth data-docs`
    external = make_offline(scratch)  # vendored jQuery / Bootstrap / icons: the docs render without internet
    make_reproducible(scratch)  # the same bytes every run: random element ids and load times pinned
    if external:
        log.warning("validate %s: Data Docs still fetch %s (a newer GX?)", name, ", ".join(external))
    return described, entries


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
