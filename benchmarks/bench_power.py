"""Does ``fersynth compare`` find what is there, and only that? Known answers, many independent replications.

Three arms on the demo's FER2013, each trained with the shipped recipe (``params.yaml: train.fer2013``):

- ``null``: the baseline against the baseline (same data and validation split, other seeds): the rule must
  say "inconclusive";
- ``benefit``: 30% of the real train rows (``control_scarce``) against the same rows + 24 correctly labelled
  rendered faces per class (``control_benefit``, ``data/fer2013_rendered``): it must say "helps";
- ``harm``: 30% of the train labels flipped (``control_harm``) against the baseline: it must say "hurts".

Every arm uses the shipped validation split (``split_seed: 0``); only trial seeds differ. Each replication is
5 seeds against 5 other seeds, and no model serves two replications of an arm: the baseline trains 2 R groups
of 5 (groups 2r and 2r+1 are null replication r; group 2r+1 is also the baseline of harm replication r), the
scarce baseline and the benefit R groups each. So the replications of an arm are independent and a rate's
standard error is the binomial one.

Every verdict is decided inside the shipped family: the replication's p-value replaces the matching
control's in the committed ``metrics/compare.json``, Holm runs over that family, and the verdict and the
minimum detectable effect come from :mod:`fersynth.compare.stats` as in ``fersynth compare``. For contrast, the
same replications are judged with the old degrees-of-freedom rule (S - 1 whenever the seed component is
positive).

Runs the ``fersynth`` CLI in a scratch project on copies of the repository's ``data/original/fer2013`` and
``data/fer2013_rendered`` (run ``dvc repro`` or ``dvc pull`` first). Results: ``metrics/bench/power.json``.

    python benchmarks/bench_power.py [--work DIR] [--replications 20] [--seeds 5] [--arms null,benefit,harm]

``--arms`` measures some arms only; the others keep their entries from the results file, each arm recording
the commit and updates (``min_steps``) of the recipe it was measured with.
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

from fersynth.compare.stats import crossed_difference, holm, minimum_detectable_effect, verdict  # noqa: E402
from fersynth.config import load_params  # noqa: E402

VARIANTS = ("data/original/fer2013", "data/fer2013_rendered")
ARMS = ("null", "benefit", "harm")
MODELS = {"null": ("base",), "benefit": ("scarce", "benefit"), "harm": ("base", "harm")}  # what each arm trains
TARGETS = {"null_false_verdicts_at_most": 0.05, "benefit_detected_at_least": 0.8, "harm_detected_at_least": 0.8}
PAIRS = load_params(ROOT / "params.yaml")["compare"]["pairs"]
SHIPPED = {arm: f"control_{arm}_vs_{PAIRS[f'control_{arm}']['baseline']}" for arm in ARMS}  # the pipeline's pairs


def scratch_params(replications: int, seeds: int, arms: tuple[str, ...] = ARMS) -> dict:
    params = load_params(ROOT / "params.yaml")
    shipped = params["train"]
    group = replications * seeds
    once = {"split_seed": 0, "log_models": "best"}  # 500 MLflow models would cost ~7 min
    models = {
        "base": shipped["fer2013"] | once | {"seed": 1000, "trials": 2 * group},
        "scarce": shipped["control_scarce"] | once | {"seed": 2000, "trials": group},
        "benefit": shipped["control_benefit"] | once | {"seed": 3000, "trials": group},
        "harm": shipped["control_harm"] | once | {"seed": 5000, "trials": group},
    }
    needed = {name for arm in arms for name in MODELS[arm]}
    params["train"] = {name: values for name, values in models.items() if name in needed}
    params["evaluate"] |= {
        "models": {name: f"models/{name}" for name in params["train"]},
        "test_sets": {"fer2013": "data/original/fer2013"},
        "fairness_on": "",
        "robustness_on": [],
        "ground_truth": "",
    }
    return params


def run(args: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def correctness(work: Path, model: str) -> pd.DataFrame:
    """Images x seeds (0/1) of one scratch model."""
    frame = pd.read_csv(work / "metrics" / "evaluate" / "predictions" / model / "fer2013.csv")
    return frame.pivot(index="key", columns="seed", values="correct").astype(float).sort_index()


def groups(table: pd.DataFrame, size: int) -> list[np.ndarray]:
    values = table.to_numpy()
    return [values[:, k : k + size] for k in range(0, values.shape[1] - size + 1, size)]


def shipped_family() -> dict[str, float]:
    """The tested p-values of the committed compare.json, by "<pair>/<test>[/<scope>]"."""
    compare = json.loads((ROOT / "metrics" / "compare.json").read_text())
    family = {}
    for pair, tests in compare.items():
        for test, entry in tests.items():
            for scope, values in [("", entry), *((f"/{s}", entry[s]) for s in ("real", "generated") if s in entry)]:
                if values.get("p_holm") is not None:
                    family[f"{pair}/{test}{scope}"] = values["p_value"]
    return family


def old_rule_p(result) -> float:
    """The p-value under the old rule: df = S - 1 whenever the seed component is positive."""
    df = result.seeds - 1 if result.seed_variance > 0 else result.df
    return float(2 * scipy_stats.t.sf(abs(result.difference) / result.se, df)) if result.se > 0 else 1.0


def judge(arm: str, baseline: np.ndarray, candidate: np.ndarray, family: dict[str, float], alpha: float) -> dict:
    result = crossed_difference((candidate - baseline).T)
    key = f"{SHIPPED[arm]}/fer2013"
    out = {
        "difference": result.difference,
        "p_value": result.p_value,
        "mde_at_alpha": minimum_detectable_effect(result.se, result.df, alpha),
    }
    for rule, p in (("shipped", result.p_value), ("old_df", old_rule_p(result))):
        members = family | {key: p}  # the shipped family, this arm's control replaced by the replication
        adjusted = dict(zip(members, holm(list(members.values())), strict=True))[key]
        mde = minimum_detectable_effect(result.se, result.df, alpha / len(members))
        out[rule] = verdict(result.difference, adjusted, mde, alpha).split(" ")[0]
        out["p_holm" if rule == "shipped" else "p_holm_old_df"] = adjusted
    return out


def rates(verdicts: list[str]) -> dict:
    """Each verdict's share with its binomial SE and exact (Clopper-Pearson) 95% interval: the replications
    are independent, and with 20 of them 0 false verdicts still allows a true rate up to ~17%."""
    n = len(verdicts)
    out = {}
    for name in ("helps", "hurts", "inconclusive"):
        k = sum(v == name for v in verdicts)
        share = k / n
        out[name] = {"share": round(share, 4), "se": round(float(np.sqrt(share * (1 - share) / n)), 4)}
        out[name]["ci95"] = exact_interval(k, n)
    return out


def exact_interval(k: int, n: int) -> list[float]:
    """The exact (Clopper-Pearson) 95% interval of a share of k in n."""
    interval = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return [round(float(interval.low), 4), round(float(interval.high), 4)]


def summarise(arm: str, judged: list[dict], seeds: int, alpha: float) -> dict:
    differences = np.array([j["difference"] for j in judged])
    below = sum(j["p_value"] < alpha for j in judged)
    half = float(scipy_stats.t.ppf(0.975, len(differences) - 1) * differences.std(ddof=1) / np.sqrt(len(differences)))
    mdes = np.array([j["mde_at_alpha"] for j in judged])
    return {
        "replications": len(judged),
        "seeds_per_side": seeds,
        "true_effect": {
            "mean": round(float(differences.mean()), 4),
            "low": round(float(differences.mean()) - half, 4),
            "high": round(float(differences.mean()) + half, 4),
        },
        "verdicts": rates([j["shipped"] for j in judged]),
        "each": [
            {
                "difference": round(j["difference"], 4),
                "p_value": round(j["p_value"], 4),
                "p_holm": round(j["p_holm"], 4),
                "verdict": j["shipped"],
            }
            for j in judged
        ],
        "verdicts_old_df_rule": rates([j["old_df"] for j in judged]),
        # the test alone, before Holm: under the null this share estimates its size (should be about alpha)
        "unadjusted_p_below_alpha": {
            "share": round(below / len(judged), 4),
            "ci95": exact_interval(below, len(judged)),
        },
        "mde_at_alpha": {
            "min": round(float(mdes.min()), 4),
            "median": round(float(np.median(mdes)), 4),
            "max": round(float(mdes.max()), 4),
        },
    }


def _head() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return head.stdout.strip()


def prepare(work: Path, params: dict) -> None:
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for variant in VARIANTS:
        source, target = ROOT / variant, work / variant
        if not (source / "manifest.parquet").is_file():
            raise SystemExit(f"{variant} is not here: run `dvc repro` (or `dvc pull`) first")
        if not target.exists():
            shutil.copytree(source, target, copy_function=os.link)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--replications", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms to measure (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "metrics" / "bench" / "power.json")
    args = parser.parse_args()
    arms = tuple(a for a in ARMS if a in args.arms.split(","))
    if not arms or set(args.arms.split(",")) - set(ARMS):
        raise SystemExit(f"--arms takes some of {','.join(ARMS)}, not {args.arms!r}")
    work = args.work or Path(tempfile.mkdtemp(prefix="fersynth-power-"))
    work.mkdir(parents=True, exist_ok=True)
    params = scratch_params(args.replications, args.seeds, arms)
    prepare(work, params)
    env = dict(os.environ, DVC_ROOT=str(work), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    # trained models stay in --work: a second run only evaluates and judges again (its training times are
    # the first run's, kept from the last results file)
    before = json.loads(args.out.read_text()) if args.out.is_file() else {}
    previous = before.get("seconds", {})
    timings = {}
    for name in params["train"]:
        if not (work / "metrics" / "train" / f"{name}.json").exists():
            timings[f"train {name}"] = round(run(["fersynth", "train", name], work, env), 1)
        elif f"train {name}" in previous:
            timings[f"train {name}"] = previous[f"train {name}"]
    timings["evaluate"] = round(run(["fersynth", "evaluate", "--out", "metrics/evaluate"], work, env), 1)
    tables = {m: groups(correctness(work, m), args.seeds) for m in params["train"]}
    family = shipped_family()  # each replication replaces its own control's entry: the family keeps its size
    missing = [key for key in (f"{pair}/fer2013" for pair in SHIPPED.values()) if key not in family]
    if missing:
        raise SystemExit(f"metrics/compare.json has no tested {missing}: run `dvc repro` first")
    replications = range(args.replications)
    pairs = {  # (baseline, candidate) groups of replication r
        "null": lambda r: (tables["base"][2 * r], tables["base"][2 * r + 1]),
        "benefit": lambda r: (tables["scarce"][r], tables["benefit"][r]),
        "harm": lambda r: (tables["base"][2 * r + 1], tables["harm"][r]),
    }
    judged = {arm: [judge(arm, *pairs[arm](r), family, args.alpha) for r in replications] for arm in arms}
    recipe = {"commit": _head(), "min_steps": params["train"][MODELS[arms[0]][0]].get("min_steps", 0)}
    measured = {arm: summarise(arm, judged[arm], args.seeds, args.alpha) | {"recipe": recipe} for arm in arms}
    kept = {arm: before["arms"][arm] for arm in ARMS if arm not in arms and arm in before.get("arms", {})}
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "recipe": "params.yaml train.fer2013, control_scarce, control_benefit, control_harm (split_seed 0)",
        "family": {
            "size": len(family),
            "from": "metrics/compare.json (its tested comparisons; the arm's own control replaced by the replication)",
        },
        "alpha": args.alpha,
        "test_images": int(next(iter(tables.values()))[0].shape[0]),
        "arms": {arm: measured.get(arm) or kept[arm] for arm in ARMS if arm in measured or arm in kept},
        "targets": TARGETS,
        "seconds": previous | timings,
    }
    found = {"null": "inconclusive", "benefit": "helps", "harm": "hurts"}
    shares = {arm: entry["verdicts"][found[arm]]["share"] for arm, entry in result["arms"].items()}
    result["met"] = {
        arm: (1 - share <= TARGETS["null_false_verdicts_at_most"])
        if arm == "null"
        else share >= TARGETS[f"{arm}_detected_at_least"]
        for arm, share in shares.items()
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
