"""End to end on a copy of this repository: `dvc repro` on the demo data, a no-op second repro, a
one-param change re-running only its stages, then
`dvc push` to the committed default remote, a fresh clone, `dvc pull`, and a clean `dvc status`; last, a
queued two-value sweep through `dvc exp run --queue` + `dvc queue start`, seen in `dvc exp show` and MLflow."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fersynth.config import raw_sections, write_sections
from tests.conftest import run_ok, wait_for_dvc_queue

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("fer2013", "nhfi", "affectnet", "casme2", "utkface")


@pytest.fixture(scope="module")
def env():
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment.pop("DVC_ROOT", None)
    environment |= {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        # one thread per process: this test is about plumbing (its trainings are tiny), and `make test` runs it
        # beside the fast suite, whose torch uses both cores (measured: 479 s for this test there, 470 s alone)
        "OMP_NUM_THREADS": "1",
    }
    return environment


def _wait_for_experiments(repo: Path, env, count: int, timeout: float = 1800) -> list[dict]:
    """Poll `dvc queue status` until nothing is queued or running, then read `dvc exp show --json`:
    one dict per experiment with its name, flattened params and the summary's answers and comparisons (its
    metrics)."""
    import json

    wait_for_dvc_queue(repo, env, timeout=timeout, poll=10)
    shown = json.loads(run_ok(["dvc", "exp", "show", "--json"], repo, env))
    experiments = []
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                data = revision.get("data") or {}
                params = _flatten(data.get("params", {}).get("params.yaml", {}).get("data", {}))
                metrics = data.get("metrics", {})
                answers = metrics.get("metrics/summary/answers.json", {}).get("data", {})
                compared = metrics.get("metrics/summary/comparisons.json", {}).get("data", {})
                experiments.append(
                    {"name": revision.get("name"), "params": params, "answers": answers, "compare": compared}
                )
    assert len(experiments) == count, json.dumps(shown)[:3000]
    return experiments


def _flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _mlflow_runs(repo: Path, name_like: str) -> list[str]:
    import sqlite3

    with sqlite3.connect(repo / "mlflow.db") as db:
        return [row[0] for row in db.execute("SELECT name FROM runs WHERE name LIKE ?", (name_like,))]


def _copy_repository(target: Path, env) -> None:
    """The project's files as git sees them (tracked plus untracked, ignored outputs excluded)."""
    files = run_ok(["git", "ls-files", "-co", "--exclude-standard"], ROOT, env).splitlines()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    _fast_params(target / "params.yaml")
    run_ok(["git", "init", "-q", "-b", "main"], target, env)
    run_ok(["git", "add", "-A"], target, env)
    run_ok(["git", "commit", "-qm", "copy"], target, env)


def _fast_params(path: Path) -> None:
    """A smaller demo with fewer epochs than params.yaml's: this test is about every stage running and the
    DVC plumbing, not accuracy (benchmarks/bench_pipeline.py times the real `make repro`)."""
    params = raw_sections(path)
    params["demo"] |= {
        "fer2013_rows": 420,
        "nhfi_images": 170,
        "affectnet_images": 210,
        "casme2_subjects": 5,
        "casme2_clips_per_subject": 3,
        "utkface_images": 150,
        "sfhq_images": 240,
        "sfhq_size": 64,
    }
    params["relabel"] |= {"rounds": 2, "compare_methods": False, "consensus": 1, "stability_check": False}
    params["relabel"]["model"]["epochs"] = 3
    params["demographics"]["epochs"] = 2
    params["gate_train"]["model"]["epochs"] = 3
    params["gate"]["classifier"] = (
        ""  # a 3-epoch classifier may accept no disgust face at all (test_gate_classifier.py)
    )
    params["ddpm_train"]["steps"] = 20
    params["ddpm_sample"] |= {"total": 14, "steps": 5}
    params["smote"]["target_per_class"] = 30
    params["fer2013_rendered"]["per_class"] = 5
    params["compare"]["min_seeds"] = 2  # the fast params train two trials
    # the imbalance bounds were stated for the demo's sizes and a trained relabeller: this one has 3 epochs and
    # consensus 1 (it moves most labels, 197 of 290, into few classes); exact-balance bounds (1) still hold
    for suite in params["validate"]["suites"].values():
        if (suite.get("max_class_ratio") or 1) > 1:
            suite["max_class_ratio"] = None
    params["train"]["defaults"] |= {"epochs": 1, "min_steps": 0, "trials": 2}
    write_sections(path, params)


class _Steps:
    """Seconds per step of this test, printed (pytest -s shows them; a failure's report includes them)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        print(f"[e2e] {name}: {now - self.last:.1f} s", file=sys.stderr)
        self.last = now


@pytest.mark.slow
def test_repro_push_clone_pull_roundtrip(tmp_path, env):
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repository(repo, env)
    step = _Steps()
    # 1. the whole demo pipeline, as `make repro` runs it: every stage in a fork of one warm fersynth
    first = subprocess.run(
        ["fersynth", "warm", "--", "dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, f"{first.stdout[-3000:]}\n{first.stderr[-3000:]}"
    stages = len(re.findall(r"Running stage '([^']+)'", first.stdout))
    assert stages > 50 and f"fersynth warm: {stages} command(s) ran warm\n" in first.stderr
    step("dvc repro (warm)")
    for dataset in DATASETS:
        manifest = pd.read_parquet(repo / "data" / "original" / dataset / "manifest.parquet")
        assert len(manifest) > 50 and set(manifest["split"]) == {"train", "val", "test"}
        assert (repo / "metrics" / "quality" / f"{dataset}.json").exists()
    # 2. nothing to do the second time
    assert "Data and pipelines are up to date" in run_ok(["dvc", "repro"], repo, env)
    step("no-op dvc repro")
    # 3. one param changed: only the stage reading it, and what consumes that stage's output, re-run
    params = raw_sections(repo / "params.yaml")
    params["smote"]["target_per_class"] += 4
    write_sections(repo / "params.yaml", params)
    ran = re.findall(r"Running stage '([^']+)'", run_ok(["dvc", "repro"], repo, env))
    # smote_balanced is a training variant: its model, its evaluation, comparison, summary and report, the balanced
    # set's no-overlap check and autolabel's picture check (its labeler against every compared model's pictures: the
    # same labels come out, so nothing after autolabel runs) read it too; nothing else runs
    # (compare runs too unless the retrained model's predictions came out identical: then its deps did not change)
    assert sorted(set(ran) - {"compare"}) == [
        "autolabel",
        "data-docs",  # the two suites' new pages: the site's index lists their new runs
        "evaluate-summary",
        "evaluate@fer2013_smote",  # the retrained model only: no other model is scored again
        "report",
        "smote",
        "summary",
        "train@fer2013_smote",
        "validate-balanced-set",
        "validate@smote_balanced",
    ], ran
    smote = pd.read_parquet(repo / "data" / "smote_balanced" / "manifest.parquet").query("split == 'train'")
    assert set(smote["label"].value_counts()) == {params["smote"]["target_per_class"]}
    step("one-param repro")
    # 4. share through the default remote (a directory beside the repo) and restore in a fresh clone
    run_ok(["dvc", "push"], repo, env)
    assert (tmp_path / "fersynth-dvc-remote").is_dir()
    run_ok(["git", "add", "-A"], repo, env)
    run_ok(["git", "commit", "-qm", "repro"], repo, env)
    clone = tmp_path / "clone"
    run_ok(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "data" / "original").joinpath("fer2013").exists()
    run_ok(["dvc", "pull"], clone, env)
    status = run_ok(["dvc", "status"], clone, env)
    assert "Data and pipelines are up to date" in status, status
    for dataset in DATASETS:
        for name in ("manifest.parquet", "quarantine.csv", "ingest.json"):
            original = (repo / "data" / "original" / dataset / name).read_bytes()
            assert (clone / "data" / "original" / dataset / name).read_bytes() == original
    assert (clone / "reports" / "data_docs" / "index.html").exists()
    assert (clone / "reports" / "data_docs" / "validations" / "fer2013" / "index-entries.json").exists()
    step("push, clone, pull, status")
    # 5. a queued sweep: both experiments run in DVC's temp workspaces, show up in `dvc exp show` with
    # their param and comparison columns, and log their trainings to the main repository's MLflow store
    values = (0, 3)
    for value in values:
        run_ok(["dvc", "exp", "run", "--queue", "-S", f"train.fer2013_sdxl.synthetic_per_class={value}"], repo, env)
    run_ok(["dvc", "queue", "start", "-j", "2"], repo, env)  # two workers: one MLflow store, written in parallel
    experiments = _wait_for_experiments(repo, env, len(values))
    step("queued sweep of two experiments")
    assert sorted(e["params"]["train.fer2013_sdxl.synthetic_per_class"] for e in experiments) == list(values)
    for experiment in experiments:
        assert experiment["answers"]["fer2013_sdxl_vs_fer2013"]["fer2013"]  # the short verdict
        trials = _mlflow_runs(repo, f"{experiment['name']}:fer2013_sdxl/%")
        assert len(trials) == 2, trials  # the demo's two trials (fast params), named after the DVC experiment
        assert _mlflow_runs(repo, f"{experiment['name']}:fer2013_sdxl") == [f"{experiment['name']}:fer2013_sdxl"]
        entry = experiment["compare"]["fer2013_sdxl_vs_fer2013"]["fer2013"]
        assert entry["low"] <= entry["difference"] <= entry["high"]
    # docs/experiments.md's sweep `dvc exp show` line: its regular expressions keep exactly the columns it names
    keep = r"Experiment|.*synthetic_per_class|fer2013_sdxl_vs_fer2013\.fer2013(\.difference|\.low|\.high)?$"
    shown = run_ok(["dvc", "exp", "show", "--csv", "--drop", ".*", "--keep", keep], repo, env)
    header = shown.splitlines()[0].split(",")
    assert set(header) - {h for h in header if h.endswith("synthetic_per_class")} == {
        "Experiment",
        "fer2013_sdxl_vs_fer2013.fer2013",  # the verdict, from answers.json
        "fer2013_sdxl_vs_fer2013.fer2013.difference",
        "fer2013_sdxl_vs_fer2013.fer2013.low",
        "fer2013_sdxl_vs_fer2013.fer2013.high",
    }, header  # exactly what it names (an adjusted interval or p-value no longer slips in)
    assert any(h.endswith("synthetic_per_class") for h in header), header
    step("exp show")
    # 6. a team: the experiments go to a shared bare git repository (`dvc exp push` also pushes their outputs to
    # the DVC remote); a teammate clones it, pulls them, sees them in `dvc exp show`, applies one and pulls its data
    team = tmp_path / "team.git"
    run_ok(["git", "init", "-q", "--bare", str(team)], tmp_path, env)
    run_ok(["git", "push", "-q", str(team), "HEAD:refs/heads/main"], repo, env)
    names = sorted(e["name"] for e in experiments)
    run_ok(["dvc", "exp", "push", str(team), *names], repo, env)
    mate = tmp_path / "teammate"
    run_ok(["git", "clone", "-q", "-b", "main", str(team), str(mate)], tmp_path, env)
    run_ok(["dvc", "exp", "pull", "origin", *names], mate, env)
    listed = run_ok(["dvc", "exp", "list", "--name-only"], mate, env).split()
    assert sorted(listed) == names, listed
    shown = run_ok(["dvc", "exp", "show", "--csv", "--drop", ".*", "--keep", keep], mate, env)
    assert all(name in shown for name in names), shown
    chosen = next(e for e in experiments if e["name"] == names[0])
    run_ok(["dvc", "exp", "apply", names[0]], mate, env)
    run_ok(["dvc", "pull"], mate, env)
    status = run_ok(["dvc", "status"], mate, env)
    assert "Data and pipelines are up to date" in status, status
    applied = yaml.safe_load((mate / "params.yaml").read_text())
    value = chosen["params"]["train.fer2013_sdxl.synthetic_per_class"]
    assert applied["train"]["fer2013_sdxl"]["synthetic_per_class"] == value
    seed0 = mate / "models" / "fer2013_sdxl" / "seed-0" / "model.safetensors"
    assert seed0.is_file() and seed0.stat().st_size > 0  # the experiment's own model, from the DVC remote
    step("team: exp push, clone, exp pull, apply, pull")
