"""A/A calibration of ``fersynth compare``: how often does it call a difference "helps" or "hurts" when
there is none?

The demo's FER2013 experiment (its params, its split, its test set) is trained K times with trial seeds
seed .. seed+K-1 (initialisation, data order, augmentation; one validation split for all). Every model is
scored on the same test images by ``fersynth evaluate``. Then many A/A comparisons are drawn: two disjoint
groups of ``seeds_per_arm`` models, both trained on the same data. A calibrated method says "helps"/"hurts"
in about ``alpha`` of them or fewer. The comparisons share models, so their rate is not a binomial count:
the models are also cut into two disjoint pools, each giving its own rate, to show how much the rate moves
with the pool. A/A pairs unrelated seeds (real comparisons pair seed k with seed k, sharing initialisation):
a harsher test. Test images are fixed and both arms are exchangeable per image, so this measures the
training-variance side only; tests/test_stats.py covers per-image effects by simulation. For contrast the
same comparisons are judged by the first release's method (3 seeds; "significant" when a paired bootstrap of
the test images excludes zero).

Row order: one more model is trained with the first trial seed on a copy of the variant whose manifest rows
are shuffled; its predictions must equal the first model's (training sorts rows canonically).

Everything runs as the user runs it (the ``fersynth`` CLI with a params file) in a scratch project.
Results: metrics/bench/null.json.

    python benchmarks/bench_null.py [--work DIR] [--models 20] [--comparisons 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats as scipy_stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fersynth.stats import crossed_difference  # noqa: E402


def scratch_params(models: int) -> dict:
    """The repository's params; two A/A experiments with the FER2013 baseline's settings."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["demo"]["datasets"] = ["fer2013"]
    base = params["train"]["fer2013"]
    params["train"] = {
        "aa": base | {"variants": ["data/original/fer2013"], "seed": 1000, "trials": models},
        "aa_shuffled": base | {"variants": ["data/shuffled/fer2013"], "seed": 1000, "trials": 1},
    }
    params["evaluate"] |= {
        "models": {"aa": "models/aa", "aa_shuffled": "models/aa_shuffled"},
        "test_sets": {"fer2013": "data/original/fer2013"},
        "fairness_on": "",
        "robustness_on": [],
    }
    return params


def run(args: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def shuffled_copy(source: Path, target: Path, seed: int) -> None:
    """The same variant with its manifest rows in another order (image shards shared by hard link)."""
    shutil.copytree(source, target, copy_function=os.link, ignore=shutil.ignore_patterns("manifest.parquet"))
    manifest = pd.read_parquet(source / "manifest.parquet")
    manifest.sample(frac=1, random_state=seed).to_parquet(target / "manifest.parquet", index=False)


def predictions(work: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(work / "metrics" / "evaluate" / "predictions" / name / "fer2013.csv")


def correctness(work: Path) -> pd.DataFrame:
    """Images x models (0/1), every A/A model a column."""
    table = predictions(work, "aa").pivot(index="key", columns="seed", values="correct").astype(float)
    return table.sort_index()


def row_order_changes_nothing(work: Path) -> bool:
    first = predictions(work, "aa").query("seed == 1000").sort_values("key")["predicted"].to_numpy()
    shuffled = predictions(work, "aa_shuffled").sort_values("key")["predicted"].to_numpy()
    return bool(np.array_equal(first, shuffled))


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True).stdout
    return head + ("+dirty" if dirty.strip() else "")


def old_method_significant(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, resamples: int = 1000) -> bool:
    """The first release: paired bootstrap of the seed-averaged correctness over test images."""
    x, y = a.mean(axis=1), b.mean(axis=1)
    index = rng.integers(0, len(x), size=(resamples, len(x)))
    differences = y[index].mean(1) - x[index].mean(1)
    low, high = np.percentile(differences, [2.5, 97.5])
    return bool(low > 0 or high < 0)


def calibrate(table: pd.DataFrame, seeds_per_arm: int, comparisons: int, alpha: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    values = table.to_numpy()
    models = values.shape[1]
    called, called_satterthwaite, called_old, differences = 0, 0, 0, []
    for _ in range(comparisons):
        chosen = rng.permutation(models)[: 2 * seeds_per_arm]
        a, b = values[:, chosen[:seeds_per_arm]], values[:, chosen[seeds_per_arm:]]
        result = crossed_difference((b - a).T)
        called += result.p_value < alpha
        if result.se > 0:  # the same interval with Satterthwaite's degrees of freedom throughout
            statistic = abs(result.difference) / result.se
            called_satterthwaite += 2 * scipy_stats.t.sf(statistic, result.satterthwaite_df) < alpha
        differences.append(result.difference)
        three = rng.permutation(models)[:6]
        called_old += old_method_significant(values[:, three[:3]], values[:, three[3:]], rng)
    rate = called / comparisons
    return {
        "comparisons": comparisons,
        "seeds_per_arm": seeds_per_arm,
        "alpha": alpha,
        "verdict_rate": round(rate, 4),
        "mean_abs_difference_points": round(100 * float(np.mean(np.abs(differences))), 2),
        "satterthwaite_df_verdict_rate": round(called_satterthwaite / comparisons, 4),
        "first_release_method_verdict_rate": round(called_old / comparisons, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--models", type=int, default=20, help="A/A models (trial seeds)")
    parser.add_argument("--seeds-per-arm", type=int, default=5)
    parser.add_argument("--comparisons", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=ROOT / "metrics" / "bench" / "null.json")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fersynth-null-"))
    work.mkdir(parents=True, exist_ok=True)
    params = scratch_params(args.models)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, DVC_ROOT=str(work), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    timings = {}
    if not (work / "data" / "original" / "fer2013" / "manifest.parquet").exists():
        timings["demo"] = run(["fersynth", "demo", "--out", "data/demo"], work, env)
        timings["ingest"] = run(
            ["fersynth", "ingest", "fer2013", "--src", "data/demo/fer2013", "--out", "data/original/fer2013"], work, env
        )
    if not (work / "data" / "shuffled" / "fer2013").exists():
        shuffled_copy(work / "data" / "original" / "fer2013", work / "data" / "shuffled" / "fer2013", seed=1)
    for name in params["train"]:
        if not (work / "metrics" / "train" / f"{name}.json").exists():
            timings[f"train {name}"] = run(["fersynth", "train", name], work, env)
    timings["evaluate"] = run(["fersynth", "evaluate", "--out", "metrics/evaluate"], work, env)
    table = correctness(work)
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "experiment": "train.fer2013 of params.yaml (demo FER2013), A/A: same data and split, different trial seeds",
        "models": int(table.shape[1]),
        "test_images": int(table.shape[0]),
        "model_accuracy": {
            "mean": round(float(table.mean().mean()), 4),
            "min": round(float(table.mean().min()), 4),
            "max": round(float(table.mean().max()), 4),
        },
        "null": calibrate(table, args.seeds_per_arm, args.comparisons, 0.05, seed=0),
        # two disjoint pools of models, each with its own A/A rate: how much the rate depends on the pool
        "null_rate_per_disjoint_pool": [
            calibrate(table.iloc[:, part], args.seeds_per_arm, args.comparisons // 2, 0.05, seed=1)["verdict_rate"]
            for part in (slice(0, table.shape[1] // 2), slice(table.shape[1] // 2, None))
        ],
        "row_order_changes_nothing": row_order_changes_nothing(work),
        "commit": commit(),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
