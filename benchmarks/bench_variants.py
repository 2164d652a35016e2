"""The data-centric stages at FER2013 size on this machine: FER2013 (35,887 images, made by the demo
generator at full size) through relabel, merge (with NHFI and AffectNet), demographics-predict, SMOTE and
the entropy filter. Each stage runs as the user runs it (the `fersynth` CLI with a params file) in
its own process; wall time and peak RSS (the process and its workers) are recorded against the
targets of 15 minutes and 4 GB. Results: metrics/bench/variants.json.

    python benchmarks/bench_variants.py [--work DIR] [--fer-rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from fersynth.config import load_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"seconds_max": 900, "peak_rss_mib_max": 4096}


def bench_params(fer_rows: int) -> dict:
    """The repository's params with real-size counts where the stage has one, and the issue's
    CPU settings for relabelling (one method, 8 epochs)."""
    params = load_params(ROOT / "params.yaml")
    params["demo"] |= {
        "fer2013_rows": fer_rows,
        "nhfi_images": 5_558,  # NHFI's size
        "affectnet_images": 4_000,  # 224 px renders are slow to make; the cap below scales with it
        "utkface_images": 3_000,
    }
    params["relabel"] |= {"compare_methods": False}
    params["relabel"]["model"]["epochs"] = 8
    params["merge"]["per_class_cap"] = {"affectnet": 400}  # paper: 4,300 of AffectNet's ~290k
    params["demographics"] |= {"epochs": 3}
    params["smote"]["target_per_class"] = 4_000  # paper 004
    return params


def measure(name: str, args: list[str], cwd: Path) -> dict:
    """Run one command; wall time and peak RSS of it and its (waited-for) worker processes."""
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{name} failed:\n{stderr[-3000:]}")
    result = {"seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}
    result["within_targets"] = (
        result["seconds"] <= TARGETS["seconds_max"] and result["peak_rss_mib"] <= TARGETS["peak_rss_mib_max"]
    )
    print(f"{name}: {result}", flush=True)
    return result


def rows(variant: Path) -> dict:
    manifest = pd.read_parquet(variant / "manifest.parquet", columns=["split", "synthetic"])
    return {"images": len(manifest), "per_split": manifest["split"].value_counts().sort_index().to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--fer-rows", type=int, default=35_887)
    parser.add_argument("--out", type=Path, default=ROOT / "metrics" / "bench" / "variants.json")
    options = parser.parse_args()
    work = options.work or Path(tempfile.mkdtemp(prefix="fersynth-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    params = bench_params(options.fer_rows)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cli = [str(Path(sys.executable).parent / "fersynth")]
    p = ["--params", "params.yaml"]
    stages: dict[str, dict] = {}

    def run(name: str, *args: str, variant: str | None = None) -> None:
        stages[name] = measure(name, [*cli, *args, *p], work)
        if variant:
            stages[name]["output"] = rows(work / variant)

    datasets = ("fer2013", "nhfi", "affectnet", "utkface")
    run("demo", "demo", "--out", "demo", *(x for d in datasets for x in ("--only", d)))
    for dataset in datasets:
        run(f"ingest@{dataset}", "ingest", dataset, "--src", f"demo/{dataset}", "--out", f"original/{dataset}")
    for dataset in ("fer2013", "nhfi", "affectnet"):
        run(
            f"relabel@{dataset}",
            "relabel",
            f"original/{dataset}",
            "--out",
            f"relabelled/{dataset}",
            "--metrics",
            f"relabel_{dataset}.json",
            "--truth",
            f"demo/ground_truth/{dataset}.csv",
            variant=f"relabelled/{dataset}",
        )
        stages[f"relabel@{dataset}"]["relabel"] = json.loads((work / f"relabel_{dataset}.json").read_text())
    sources = [x for d in ("fer2013", "nhfi", "affectnet") for x in ("--source", f"{d}=relabelled/{d}")]
    run("merge", "merge", *sources, "--out", "merged", variant="merged")
    model = ("--model-dir", "demographics_model")
    run("demographics-train", "demographics-train", "original/utkface", *model, "--metrics", "demographics.json")
    stages["demographics-train"]["test"] = json.loads((work / "demographics.json").read_text())
    run(
        "demographics-predict@merged",
        "demographics-predict",
        "merged",
        *model,
        "--out",
        "demographics",
        variant="merged",
    )
    run("smote", "smote", "original/fer2013", "--out", "smote_balanced", variant="smote_balanced")
    run("filter@fer2013", "filter", "original/fer2013", "--out", "filtered", "--metrics", "filter.json")
    stages["filter@fer2013"]["output"] = rows(work / "filtered")

    results = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "sizes": {k: v for k, v in params["demo"].items() if k.endswith(("_rows", "_images"))},
        "settings": {
            "relabel": params["relabel"],
            "merge": params["merge"],
            "demographics": params["demographics"],
            "smote": {k: v for k, v in params["smote"].items() if k != "augment"},
        },
        "targets": TARGETS,
        "stages": stages,
        "all_within_targets": all(s["within_targets"] for n, s in stages.items() if n != "demo"),
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
