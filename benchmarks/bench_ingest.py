"""Ingest at real size: a FER2013-size CSV (35,887 rows) and an AffectNet-size folder (30,100 images,
224x224 RGB), both made by the demo generator. Each measurement runs in its own process, which
reports its wall time and peak RSS. Results: metrics/bench/ingest.json.

    python benchmarks/bench_ingest.py [--work DIR] [--fer-rows N] [--affectnet-images N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
task, args = sys.argv[1], json.loads(sys.argv[2])
import numpy, pandas, PIL.Image, fersynth.ingest, fersynth.demo  # imports are not what is timed
start = time.perf_counter()
if task == "ingest":
    from fersynth.ingest import ingest
    from fersynth.ingest.common import IngestConfig
    report = ingest(args["dataset"], Path(args["src"]), Path(args["out"]), IngestConfig(workers=args.get("workers", 0)))
    extra = {"read": report["read"], "kept": report["kept"], "quarantined": report["quarantined"]}
elif task == "naive_fer2013":
    # The plain loop most FER2013 loaders use: pandas rows, str.split, PIL, one image at a time.
    import hashlib, io
    import numpy as np, pandas as pd
    from PIL import Image
    frame = pd.read_csv(args["csv"])
    kept = 0
    for row in frame.itertuples():
        try:
            pixels = np.array(row.pixels.split(), dtype=np.uint8).reshape(48, 48)
        except ValueError:
            continue
        image = Image.fromarray(pixels)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        hashlib.sha256(image.tobytes()).hexdigest()
        kept += 1
    extra = {"kept": kept}
elif task == "demo":
    from fersynth.demo import DemoConfig, make_demo
    make_demo(DemoConfig(**args["config"]), Path(args["out"]))
    extra = {}
seconds = time.perf_counter() - start
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
workers_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest worker process
extra |= {"peak_rss_worker_mib": round(workers_mib, 1)} if workers_mib else {}
print("RESULT " + json.dumps({"seconds": round(seconds, 2), "peak_rss_mib": round(peak_mib, 1)} | extra))
"""


def measure(task: str, **args) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, task, json.dumps(args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{task} failed:\n{result.stderr[-3000:]}")
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--fer-rows", type=int, default=35_887)
    parser.add_argument("--affectnet-images", type=int, default=30_100)
    parser.add_argument("--out", type=Path, default=ROOT / "metrics" / "bench" / "ingest.json")
    parser.add_argument("--only", choices=["fer2013", "affectnet"], help="one part; the other's results are kept")
    options = parser.parse_args()
    work = options.work or Path(tempfile.mkdtemp(prefix="fersynth-bench-"))
    results: dict = json.loads(options.out.read_text()) if options.only and options.out.exists() else {}
    results["machine"] = {"python": platform.python_version(), "cpus": _cpus(), "platform": platform.platform()}
    if options.only != "affectnet":
        fer2013_csv(options, work, results)
    if options.only != "fer2013":
        affectnet_folders(options, work, results)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {options.out}")


def fer2013_csv(options, work: Path, results: dict) -> None:
    """FER2013 CSV at full size: ours vs the plain loop, same file, same run."""
    demo = measure("demo", out=str(work / "demo"), config={"datasets": ["fer2013"], "fer2013_rows": options.fer_rows})
    csv = work / "demo" / "fer2013" / "fer2013.csv"
    ours = measure("ingest", dataset="fer2013", src=str(csv.parent), out=str(work / "out" / "fer2013"))
    naive = measure("naive_fer2013", csv=str(csv))
    results["fer2013_csv"] = {
        "rows": options.fer_rows,
        "csv_mib": round(csv.stat().st_size / 2**20, 1),
        "demo_generation": demo,
        "fersynth_ingest": ours,
        "plain_pandas_pil_loop": naive,
        "speedup": round(naive["seconds"] / ours["seconds"], 2),
        "targets": {"seconds_max": 30, "peak_rss_mib_max": 2048, "speedup_min": 3},
    }
    print(json.dumps(results["fer2013_csv"], indent=2))


def affectnet_folders(options, work: Path, results: dict) -> None:
    """AffectNet-size folder release: peak memory at 10% and 100% of the images; one process vs
    ``ingest.workers`` (one per CPU), which must write the same bytes."""
    demo = measure(
        "demo",
        out=str(work / "demo"),
        config={"datasets": ["affectnet"], "affectnet_format": "folders", "affectnet_images": options.affectnet_images},
    )
    full = work / "demo" / "affectnet"
    tenth = work / "affectnet_tenth"
    files = sorted(p for p in full.rglob("*.png"))
    for path in files[: len(files) // 10]:
        (tenth / path.relative_to(full)).parent.mkdir(parents=True, exist_ok=True)
        (tenth / path.relative_to(full)).hardlink_to(path)
    small = measure("ingest", dataset="affectnet", src=str(tenth), out=str(work / "out" / "affectnet_tenth"))
    one = measure("ingest", dataset="affectnet", src=str(full), out=str(work / "out" / "affectnet_1"), workers=1)
    large = measure("ingest", dataset="affectnet", src=str(full), out=str(work / "out" / "affectnet"))
    results["affectnet_folders"] = {
        "images": options.affectnet_images,
        "demo_generation": demo,
        "ingest_10_percent": small,
        "ingest_100_percent": large,
        "ingest_100_percent_one_process": one,
        "workers": _cpus(),
        "speedup_over_one_process": round(one["seconds"] / large["seconds"], 2),
        "same_bytes_as_one_process": _digest(work / "out" / "affectnet") == _digest(work / "out" / "affectnet_1"),
        "peak_rss_growth_ratio": round(large["peak_rss_mib"] / small["peak_rss_mib"], 2),
        "images_per_second": round(large["read"] / large["seconds"], 1),
        "images_per_second_one_process": round(one["read"] / one["seconds"], 1),
        "targets": {"speedup_min": 2.0, "same_bytes": True},
    }
    print(json.dumps(results["affectnet_folders"], indent=2))


def _digest(root: Path) -> str:
    """sha256 over every file of a variant directory, by relative path."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
