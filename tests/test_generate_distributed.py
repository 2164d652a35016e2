"""Generation stages under torchrun: two CPU processes (gloo) write byte for byte what one process writes,
and the split and merge of every round, checked with threads standing in for processes."""

import hashlib
import os
import re
import threading

import pytest
import yaml

from fersynth.generate import quota
from fersynth.generate.artificial import all_cells
from fersynth.generate.backends import DemoBackend, DemoBackendConfig
from fersynth.generate.gate import GateResult
from fersynth.generate.prompts import PromptBuilder, PromptConfig
from fersynth.generate.quota import fill_quotas, share
from fersynth.ingest import ingest
from fersynth.modeling.process_group import Distributed
from fersynth.testing.random_pipeline import save_random_pipeline
from fersynth.variants.variant import Variant
from tests.conftest import run_alone_and_with_torchrun, tree_bytes


# split and merge ----------------------------------------------------------------------------------
@pytest.mark.parametrize("count, batch_size, world_size", [(10, 3, 2), (64, 4, 3), (5, 8, 2), (7, 1, 4), (1, 1, 3)])
def test_shares_are_whole_batches_and_cover_a_chunk_once(count, batch_size, world_size):
    shares = [share(count, batch_size, Distributed(rank, world_size)) for rank in range(world_size)]
    assert sorted(i for mine in shares for i in mine) == list(range(count))
    one = [tuple(range(s, min(s + batch_size, count))) for s in range(0, count, batch_size)]
    # a process's share, cut into batches again, gives batches a single process makes
    again = [tuple(mine[s : s + batch_size]) for mine in shares for s in range(0, len(mine), batch_size)]
    assert sorted(again) == one


class BatchRecorder(DemoBackend):
    """The demo renderer, recording the batches of ``batch_size`` it is asked for (seeds per batch)."""

    def __init__(self, batch_size: int):
        super().__init__(DemoBackendConfig(size=32))
        self.batch_size = batch_size
        self.batches: list[tuple[int, ...]] = []

    def generate(self, requests):
        for start in range(0, len(requests), self.batch_size):
            self.batches.append(tuple(r.seed for r in requests[start : start + self.batch_size]))
        return super().generate(requests)


class PixelGate:
    """Accepts about half the pictures, decided by the picture alone (as the real gate): any split of the
    work gives each picture the same verdict."""

    def check(self, image, emotion=None):
        digest = hashlib.sha256(image.tobytes()).digest()
        accepted = digest[0] % 2 == 0
        return GateResult(accepted, "ok" if accepted else "dark", -1, digest[1] / 255)


class ThreadTeam:
    """``all_gather`` and ``gather_to_main`` between threads that stand in for the processes of a team."""

    def __init__(self, world_size: int):
        self.slots: list = [None] * world_size
        self.barrier = threading.Barrier(world_size, timeout=60)

    def all_gather(self, value, state):
        self.slots[state.rank] = value
        self.barrier.wait()
        gathered = list(self.slots)
        self.barrier.wait()  # nobody overwrites a slot before everyone has read it
        return gathered

    def gather_to_main(self, value, state):
        gathered = self.all_gather(value, state)
        return gathered if state.main else []


def _fill(team: Distributed, backend: BatchRecorder, kept: list) -> list[tuple]:
    quotas = {cell: 3 for cell in all_cells()[:5]}
    attempts = fill_quotas(
        quotas,
        PromptBuilder(PromptConfig()),
        backend,
        PixelGate(),
        seed=11,
        max_attempts_per_image=4,
        on_accept=lambda request, image, result: kept.append((request.seed, image.tobytes(), result)),
        chunk=5,  # steps of 6 requests (two batches of 3) per process: several steps in a round
        team=team,
    )
    return [(a.request.seed, a.request.attempt, a.result) for a in attempts]


@pytest.mark.parametrize("world_size", [2, 3])
def test_a_team_attempts_and_keeps_what_one_process_does(world_size, monkeypatch):
    single_backend, single_kept = BatchRecorder(3), []
    single = _fill(Distributed(), single_backend, single_kept)
    assert len(single) > 15 and 0 < len(single_kept) < len(single)  # rejections: more than one round

    threads = ThreadTeam(world_size)
    monkeypatch.setattr(quota, "all_gather", threads.all_gather)
    monkeypatch.setattr(quota, "gather_to_main", threads.gather_to_main)
    backends = [BatchRecorder(3) for _ in range(world_size)]
    kept: list[list] = [[] for _ in range(world_size)]
    results: list = [None] * world_size

    def member(rank: int) -> None:
        results[rank] = _fill(Distributed(rank, world_size), backends[rank], kept[rank])

    workers = [threading.Thread(target=member, args=(rank,)) for rank in range(world_size)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert all(result == single for result in results)  # every process plans the same rounds
    assert kept[0] == single_kept and not any(kept[1:])  # rank 0 alone writes, in one process's order
    assert sorted(b for backend in backends for b in backend.batches) == sorted(single_backend.batches)
    assert all(backend.batches for backend in backends)  # every process did generate


# torchrun end to end ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def project(tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("generate-team")
    ingest("fer2013", tiny_demo / "fer2013", root / "fer2013")
    pipe = save_random_pipeline(root / "pipe", scale="tiny")
    diffusers = {"model": str(pipe), "steps": 2, "size": 64, "batch_size": 3, "local_files_only": True}
    params = {
        # the tiny pipeline's noise has a grey-level deviation of 23-24.5: about a fifth is "blank", so the
        # quotas take several rounds
        "gate": {"detector": "none", "blank_std_below": 23.5},
        "fer2013_sdxl": {"per_class": 8, "seed": 3, "backend": {"name": "diffusers", "diffusers": diffusers}},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.mark.slow
def test_torchrun_generation_writes_what_one_process_writes(project):
    root = project
    stage = ["-m", "fersynth.cli", "generate-augmented", "fer2013", "--params", "params.yaml"]
    before = set(tree_bytes(root))
    team = run_alone_and_with_torchrun(root, stage, dict(os.environ))

    # rank 1 generated its shares (every round) and wrote nothing: the only new files are rank 0's
    logged = team.stdout  # log lines go through tqdm.write
    assert "round 2," in logged and re.search(r"round 1, 56 images asked for; rank 1 of 2 makes 2\d\b", logged)
    outputs = {"single.json", "team.json"} | {
        f"{run}/{name}" for run in ("single", "team") for name in tree_bytes(root / "single")
    }
    assert set(tree_bytes(root)) - before == outputs
    assert tree_bytes(root / "team") == tree_bytes(root / "single")
    assert (root / "team.json").read_bytes() == (root / "single.json").read_bytes()

    # 7 emotions x 8 cells of one image each, less the cells whose five attempts were all "blank"
    metrics = yaml.safe_load((root / "team.json").read_text())  # JSON is YAML
    generated = 7 * 8 - metrics["short_cells"]
    assert metrics["short_cells"] <= 3 and metrics["attempts"] > 7 * 8
    manifest = Variant(root / "team").manifest
    assert len(manifest) == len(Variant(root / "fer2013").manifest) + generated
    assert manifest["synthetic"].sum() == generated == metrics["accepted"]
    assert manifest.loc[manifest["synthetic"], "generator"].eq("diffusers").all()
