import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from fersynth.config import build, load_params
from fersynth.errors import ParamsError
from fersynth.runtime import ISA_SETTINGS, THREAD_SETTINGS, RuntimeConfig, pinned_environment, runtime_config
from tests.conftest import run_ok, tree_bytes

# What another machine looks like to the libraries: its best oneDNN ISA and ATen vectorisation are other
# than ours, MKL picks another code path, and it runs another number of threads.
ANOTHER_MACHINE = {
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def test_the_default_pins_every_library_to_avx2_and_two_threads():
    env = pinned_environment(RuntimeConfig())
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["MKL_CBWR"] == "AVX2" and env["OPENBLAS_CORETYPE"] == "Haswell"
    assert all(env[name] == "2" for name in THREAD_SETTINGS)
    assert pinned_environment(RuntimeConfig(threads=0, cpu_isa="native")) == {}
    assert set(pinned_environment(RuntimeConfig(threads=4, cpu_isa="native"))) == set(THREAD_SETTINGS)
    assert set(ISA_SETTINGS["avx2"]) | set(THREAD_SETTINGS) == set(env)


def test_params_choose_the_pin_and_bad_values_are_one_line_errors(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"runtime": {"threads": 3, "cpu_isa": "native"}}))
    assert runtime_config(params) == RuntimeConfig(threads=3, cpu_isa="native")
    params.write_text(yaml.safe_dump({"demo": {}}))
    assert runtime_config(params) == RuntimeConfig()  # no section: the reproducible defaults
    assert runtime_config(tmp_path / "missing.yaml") == RuntimeConfig()
    with pytest.raises(ParamsError, match="cpu_isa must be one of"):
        build(RuntimeConfig, {"cpu_isa": "avx512"})
    with pytest.raises(ParamsError, match="threads must be a whole number"):
        build(RuntimeConfig, {"threads": -1})


def test_the_command_line_overrides_what_the_environment_says(tmp_path):
    """`fersynth` pins before PyTorch loads: the settings another machine would bring are replaced, and PyTorch
    runs the pinned thread count and ISA."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"runtime": {"threads": 2, "cpu_isa": "avx2"}}))
    probe = (
        "import sys; sys.argv = ['fersynth', '--help']\n"
        "from fersynth.runtime import pin, runtime_config\n"
        "pin(runtime_config())\n"
        "import os, torch, json\n"
        "print(json.dumps({'threads': torch.get_num_threads(), 'aten': torch.backends.cpu.get_cpu_capability(),"
        " 'onednn': os.environ['ONEDNN_MAX_CPU_ISA'], 'mkl': os.environ['MKL_CBWR']}))\n"
    )
    env = os.environ | ANOTHER_MACHINE
    shown = json.loads(run_ok([sys.executable, "-c", probe], tmp_path, env).strip().splitlines()[-1])
    assert shown == {"threads": 2, "aten": "AVX2", "onednn": "AVX2", "mkl": "AVX2"}


def _project(root: Path, runtime: dict) -> dict[str, str]:
    """A scratch project: the demo's FER2013 (240 rows), and a 2-epoch experiment of the demo's recipe."""
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    recipe = params["train"]["fer2013"] | {"epochs": 2, "trials": 1}
    scratch = {
        "runtime": runtime,
        "demo": params["demo"] | {"datasets": ["fer2013"], "fer2013_rows": 240},
        "ingest": params["ingest"] | {"workers": 1},
        "train": {"tiny": recipe},
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(scratch))
    return {"PYTHONHASHSEED": "0", "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}


def _train_under(root: Path, runtime: dict, machine: dict[str, str]) -> dict[str, bytes]:
    env = os.environ | _project(root, runtime) | machine
    fersynth = str(Path(sys.executable).parent / "fersynth")
    run_ok([fersynth, "demo", "--out", "data/demo"], root, env)
    run_ok([fersynth, "ingest", "fer2013", "--src", "data/demo/fer2013", "--out", "data/original/fer2013"], root, env)
    run_ok([fersynth, "train", "tiny"], root, env)
    outputs = {f"models/{k}": v for k, v in tree_bytes(root / "models" / "tiny").items()}
    metrics = json.loads((root / "metrics" / "train" / "tiny.json").read_text())
    return outputs | {"metrics": json.dumps(metrics, sort_keys=True).encode()}


UNPINNED_STEPS = """
import hashlib, sys, torch
from fersynth.modeling.architectures import build_model, channels_last
torch.manual_seed(0)
model = channels_last(build_model("small_cnn_s2", 7, 1, 48))
optimiser = torch.optim.AdamW(model.parameters(), 5e-3)
x = torch.rand(32, 1, 48, 48, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=torch.channels_last)
y = torch.arange(32) % 7
for _ in range(10):
    optimiser.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); optimiser.step()
print(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest())
"""


@pytest.mark.slow  # ~1 min: two scratch projects, each demo -> ingest -> a 2-epoch training
def test_two_instruction_sets_and_two_thread_counts_train_the_same_bytes_once_pinned(tmp_path):
    """What a fresh clone on another CPU does: the pinned runtime gives the same weights and metrics under
    another machine's ISA, MKL path and thread count. Unpinned, the same settings change ten training steps
    of the demo's CNN (so this test can fail: the pin is what makes the two equal)."""
    pinned = {"threads": 2, "cpu_isa": "avx2"}
    here = _train_under(tmp_path / "pinned_here", pinned, {})
    there = _train_under(tmp_path / "pinned_there", pinned, ANOTHER_MACHINE)
    assert here.keys() == there.keys() and any(k.endswith(".safetensors") for k in here)
    assert [k for k in here if here[k] != there[k]] == []
    free = [
        run_ok([sys.executable, "-c", UNPINNED_STEPS], tmp_path, os.environ | machine | {"OMP_NUM_THREADS": threads})
        for machine, threads in (({}, "2"), (ANOTHER_MACHINE, "1"))
    ]
    assert free[0] != free[1]


@pytest.mark.slow  # ~1.5 min: a clone, the demo, and the CASME II branch down to its trained models
def test_a_fresh_clone_on_another_machine_reproduces_the_committed_lock(tmp_path):
    """What CI and a newcomer see: `git clone`, then `dvc repro` of a few stages (the demo, both ingests'
    code paths, a validation, six trained models) under another machine's instruction sets and thread
    count. DVC rewrites their dvc.lock entries from what it computed: they must equal the committed ones,
    and the work tree must stay clean (a timing or a run id in a tracked file would show here)."""
    root = Path(__file__).resolve().parents[1]
    clone = tmp_path / "clone"  # the committed code with its committed lock (not this work tree)
    run_ok(["git", "clone", "-q", str(root), str(clone)], tmp_path, dict(os.environ))
    env = os.environ | ANOTHER_MACHINE | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DVC_ROOT", None)
    stages = ["demo", "ingest@fer2013", "validate@fer2013", "ingest@casme2", "validate@casme2", "train@casme2"]
    run_ok([sys.executable, "-m", "dvc", "repro", "--single-item", *stages], clone, env)
    changed = run_ok(["git", "status", "--porcelain"], clone, env)
    assert changed == "", f"a fresh clone's dvc repro changed tracked files:\n{changed}"
    diff = run_ok(["git", "diff", "dvc.lock"], clone, env)
    assert diff == ""
