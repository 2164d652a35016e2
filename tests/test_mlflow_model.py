"""A fersynth classifier as an MLflow model: it loads, predicts and serves where fersynth is not installed,
refuses wrong input with a message, prepares pictures exactly as training does, and is registered with its
card as description and ``@champion``. The models here are tiny untrained networks saved as ``fersynth train``
saves a trial, logged without training (seconds, not minutes)."""

import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from PIL import Image

from fersynth import tracking
from fersynth.modeling.architectures import build_model
from fersynth.modeling.checkpoint import save_checkpoint
from fersynth.modeling.data import InputConfig, model_input
from fersynth.modeling.preprocess import Preprocess, PreprocessConfig
from fersynth.modeling.trained import class_probabilities
from fersynth.train import mlflow_model
from fersynth.train.mlflow_model import CHAMPION, DESCRIPTION_LIMIT, register_best
from tests.conftest import free_port, image_bytes

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
GREY = InputConfig(size=16, channels=1, preprocess=PreprocessConfig(equalize=True, clahe_clip=2.0, blur_sigma=0.5))
RGB = InputConfig(size=16, channels=3)


def save_trial(directory: Path, config: InputConfig, seed: int) -> Path:
    """A trial directory as `fersynth train` writes it (safetensors + config.json), of a tiny seeded net."""
    torch.manual_seed(seed)
    model = build_model("small_cnn", len(CLASSES), config.channels, config.size, width=0.25).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so preparation differences show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    settings = {"architecture": "small_cnn", "width": 0.25, "seed": seed, "variants": []}
    input_ = {"size": config.size, "channels": config.channels, "preprocess": config.preprocess.__dict__}
    save_checkpoint(directory, model, settings | {"input": input_, "classes": list(CLASSES)})
    return directory


def log_trial(directory: Path, config: InputConfig, seed: int) -> dict:
    """Log a saved trial as `train` does, in a run of its own; its model URI and what it should predict."""
    from fersynth.modeling.trained import load_trained

    model, _, _ = load_trained(directory)
    example = np.random.default_rng(seed).integers(0, 256, (2, config.channels, config.size, config.size), np.uint8)
    with tracking.start_run("train", run_name=f"tiny/seed-{seed}"):
        uri = mlflow_model.log_trial_model(directory, example, CLASSES)
    return {"seed": seed, "best_val_accuracy": 0.5, "model_uri": uri, "model": model}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A repository with an MLflow store holding `fersynth-tiny` (grey, @champion) and `fersynth-tiny_rgb`."""
    root = tmp_path_factory.mktemp("repo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DVC_ROOT", str(root))
        patch.delenv("DVC_EXP_NAME", raising=False)
        tracking.ensure_experiment()
        grey = log_trial(save_trial(root / "models" / "tiny", GREY, 0), GREY, 0)
        register_best("tiny", [grey], "# Model card: `tiny`\n", root / "models" / "tiny" / "model.safetensors", True)
        rgb = log_trial(save_trial(root / "models" / "tiny_rgb", RGB, 1), RGB, 1)
        weights = root / "models" / "tiny_rgb" / "model.safetensors"
        register_best("tiny_rgb", [rgb], "# Model card: `tiny_rgb`\n", weights, True)
        yield {"root": root, "grey": grey, "rgb": rgb, "uri": tracking.tracking_uri()}


@pytest.fixture
def registry(store, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(store["root"]))
    tracking.ensure_experiment()  # this process's tracking URI: the store's
    return store


def face(mode: str = "L", size=(40, 30), emotion: str = "happy") -> Image.Image:
    return Image.open(io.BytesIO(image_bytes(emotion, size=size, mode=mode)))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_shipped_code_imports_no_fersynth_and_a_module_that_does_is_refused(tmp_path, monkeypatch):
    package = mlflow_model.stage_code(tmp_path / "a")
    assert sorted(p.name for p in package.iterdir()) == [
        "__init__.py",
        "architectures.py",
        "images.py",
        "preprocess.py",
    ]
    assert all(not mlflow_model.fersynth_imports(p.read_text()) for p in package.iterdir())
    source = "import fersynth.paths\nfrom . import sibling\ndef f():\n    from fersynth.log import get_logger\n"
    assert mlflow_model.fersynth_imports(source) == {"fersynth.paths", ".", "fersynth.log"}
    assert mlflow_model.fersynth_imports("import fersynthetic\nfrom fersynth_pyfunc import images\n") == set()
    monkeypatch.setitem(mlflow_model.SHIPPED_MODULES, "trained", "fersynth.modeling.trained")
    with pytest.raises(RuntimeError, match="fersynth.modeling.trained imports"):
        mlflow_model.stage_code(tmp_path / "b")


def test_a_registered_version_is_described_by_its_card_and_champion_follows_the_workspace(registry, tmp_path):
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("fersynth-tiny", CHAMPION)
    assert champion.description == "# Model card: `tiny`\n"
    assert champion.tags["fersynth.trial_seed"] == "0" and len(champion.tags["fersynth.weights_sha256"]) == 64
    assert "@champion" in client.get_registered_model("fersynth-tiny").description
    # a training in a DVC temp workspace registers its version and leaves the alias; a later workspace one moves it
    trial = dict(registry["grey"], best_val_accuracy=0.9)
    long_card = "# card\n" + "x" * (2 * DESCRIPTION_LIMIT)
    weights = registry["root"] / "models" / "tiny" / "model.safetensors"
    queued = register_best("tiny", [trial], long_card, weights, champion=False)
    assert client.get_model_version_by_alias("fersynth-tiny", CHAMPION).version == champion.version
    description = client.get_model_version("fersynth-tiny", queued["version"]).description
    assert len(description) <= DESCRIPTION_LIMIT and "full card is MODEL_CARD.md" in description
    current = register_best("tiny", [trial], "# card 3\n", weights, champion=True)
    assert client.get_model_version_by_alias("fersynth-tiny", CHAMPION).version == current["version"]
    client.set_registered_model_alias("fersynth-tiny", CHAMPION, champion.version)  # as the other tests expect


def test_the_model_prepares_pictures_byte_for_byte_as_training_does(registry):
    pictures = [face("L"), face("RGB", (33, 47)), face("L").convert("I;16"), face("RGB").convert("P"), face("LA")]
    # both loaded in one process first: each keeps its own shipped modules
    loaded = {
        name: mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}") for name in ("fersynth-tiny", "fersynth-tiny_rgb")
    }
    for name, config in (("fersynth-tiny", GREY), ("fersynth-tiny_rgb", RGB)):
        served = loaded[name].unwrap_python_model()
        preprocess = Preprocess(config.preprocess)
        for picture in pictures:
            assert np.array_equal(served.prepare(picture), model_input(picture, config, preprocess)), (
                name,
                picture.mode,
            )


def test_pixels_and_pictures_give_the_trials_own_probabilities(registry):
    loaded = mlflow.pyfunc.load_model(f"models:/fersynth-tiny@{CHAMPION}")
    model = registry["grey"]["model"]
    pixels = np.random.default_rng(5).integers(0, 256, (3, 1, 16, 16), np.uint8)
    expected = class_probabilities(model, pixels, len(CLASSES))
    assert loaded.predict(pixels).to_numpy() == pytest.approx(expected, abs=1e-5)
    assert loaded.predict(pixels.astype(np.int64)).to_numpy() == pytest.approx(expected, abs=1e-5)  # JSON's ints
    pictures = [face("L", emotion=e) for e in ("happy", "sad")]
    prepared = np.stack([model_input(p, GREY) for p in pictures])
    expected = class_probabilities(model, prepared, len(CLASSES))
    as_bytes = [png(p) for p in pictures]
    for given in (pd.DataFrame({"image": as_bytes}), {"image": as_bytes}, as_bytes):
        assert loaded.predict(given).to_numpy() == pytest.approx(expected, abs=1e-5)
    as_text = [base64.b64encode(b).decode() for b in as_bytes]  # what JSON carries
    assert loaded.predict(pd.DataFrame({"image": as_text})).to_numpy() == pytest.approx(expected, abs=1e-5)
    assert loaded.predict(as_bytes[0]).shape == (1, len(CLASSES))
    assert list(loaded.predict(np.zeros((0, 1, 16, 16), np.uint8)).columns) == list(CLASSES)


@pytest.mark.parametrize(
    "given, message",
    [
        (np.full((4, 1, 16, 16), 0.5, np.float32), r"float32 within \[0\.5, 0\.5\]: multiply by 255"),
        (np.full((1, 1, 16, 16), 200.0), r"integers 0-255 \(uint8\), got float64"),
        (np.full((1, 1, 16, 16), 256, np.int64), r"within 0-255, got int64 within \[256, 256\]"),
        (np.full((1, 1, 16, 16), -1, np.int16), r"within 0-255"),
        (np.zeros((1, 16, 16), np.uint8), r"must be N x 1 x 16 x 16, got shape \(1, 16, 16\)"),
        (np.zeros((1, 3, 16, 16), np.uint8), r"got shape \(1, 3, 16, 16\)"),
        (np.full((1, 1, 16, 16), True), r"integers 0-255 \(uint8\), got bool"),
        (pd.DataFrame({"pixels": [1, 2]}), r"needs an 'image' column"),
        ({"pixels": [1]}, r"one key, 'image'"),
        (pd.DataFrame({"image": [b"not a picture"]}), r"picture 0: not a picture"),
        (pd.DataFrame({"image": [png(face()), 3]}), r"picture 1: expected encoded image bytes"),
        ([[1, 2], [3]], r"pixels must"),
    ],
    ids=lambda v: None if isinstance(v, str) else type(v).__name__,
)
def test_wrong_input_is_refused_with_a_message(registry, given, message):
    loaded = mlflow.pyfunc.load_model(f"models:/fersynth-tiny@{CHAMPION}")
    with pytest.raises(MlflowException, match=message) as refused:
        loaded.predict(given)
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE" and "\n" not in refused.value.message


def test_a_decompression_bomb_is_refused_from_its_header(registry):
    loaded = mlflow.pyfunc.load_model(f"models:/fersynth-tiny@{CHAMPION}")
    huge = png(Image.new("1", (9000, 9000)))  # 81 M pixels in a few KB
    with pytest.raises(MlflowException, match="picture 0: too large"):
        loaded.predict([huge])


# Hides fersynth from a Python process, as if the venv had everything but fersynth: every sys.path entry that
# holds a fersynth package goes (the editable install's .pth adds the main checkout's src/).
SITECUSTOMIZE = """
import sys
from pathlib import Path
sys.path[:] = [p for p in sys.path if not (Path(p or ".") / "fersynth" / "__init__.py").is_file()]
"""

WITHOUT_FERSYNTH = """
import base64, io, json, sys
import numpy as np, pandas as pd
try:
    import fersynth
except ModuleNotFoundError as error:
    print("no fersynth:", error, file=sys.stderr)
else:
    raise SystemExit(f"fersynth is importable: {fersynth.__file__}")
import mlflow
from mlflow.exceptions import MlflowException
model = mlflow.pyfunc.load_model(sys.argv[1])
pixels = np.array(json.loads(sys.argv[2]), dtype=np.uint8)
picture = base64.b64decode(sys.argv[3])
try:
    model.predict(pixels.astype(np.float32) / 255)
    refused = None
except MlflowException as error:
    refused = error.message
requirements = open(mlflow.artifacts.download_artifacts(sys.argv[1] + "/requirements.txt")).read()
print(json.dumps({
    "pixels": model.predict(pixels).to_numpy().tolist(),
    "picture": model.predict(pd.DataFrame({"image": [picture]})).to_numpy().tolist(),
    "refused": refused,
    "requirements": requirements.split(),
    "fersynth_modules": sorted(m for m in sys.modules if m == "fersynth" or m.startswith("fersynth.")),
}))
"""


def without_fersynth(tmp_path: Path, store: dict) -> dict[str, str]:
    """The environment of a process that cannot import fersynth and reads the store like any MLflow client."""
    hide = tmp_path / "hide"
    hide.mkdir(exist_ok=True)
    (hide / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    return env | {"PYTHONPATH": str(hide), "MLFLOW_TRACKING_URI": store["uri"], "MLFLOW_DISABLE_TELEMETRY": "true"}


def test_a_registered_model_loads_and_predicts_where_fersynth_cannot_be_imported(registry, tmp_path):
    pixels = np.random.default_rng(9).integers(0, 256, (2, 1, 16, 16), np.uint8)
    picture = png(face("RGB", (64, 64)))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_FERSYNTH,
            f"models:/fersynth-tiny@{CHAMPION}",
            json.dumps(pixels.tolist()),
            base64.b64encode(picture).decode(),
        ],
        env=without_fersynth(tmp_path, registry),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no fersynth: No module named 'fersynth'" in done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    model = registry["grey"]["model"]
    assert np.array(got["pixels"]) == pytest.approx(class_probabilities(model, pixels, 7), abs=1e-5)
    prepared = model_input(Image.open(io.BytesIO(picture)), GREY)[None]
    assert np.array(got["picture"]) == pytest.approx(class_probabilities(model, prepared, 7), abs=1e-5)
    assert "multiply by 255" in got["refused"]
    assert got["fersynth_modules"] == []  # its code came from the model (fersynth_pyfunc), not from fersynth
    names = {line.split("==")[0] for line in got["requirements"]}
    assert {"mlflow", "torch", "safetensors", "pillow", "opencv-python-headless"} <= names
    assert not any("fersynth" in name for name in names)


def post(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.slow  # ~30 s on 2 cores: `mlflow models serve` imports and starts uvicorn
def test_mlflow_models_serve_answers_json_pixels_and_base64_pictures_without_fersynth(registry, tmp_path):
    port = free_port()
    env = without_fersynth(tmp_path, registry)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/fersynth-tiny@{CHAMPION}"]
    server = subprocess.Popen(
        [*command, "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port), "--workers", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()[-3000:]
                time.sleep(0.5)
        model = registry["grey"]["model"]
        pixels = np.random.default_rng(4).integers(0, 256, (2, 1, 16, 16), np.uint8)
        status, body = post(f"{url}/invocations", json.dumps({"inputs": pixels.tolist()}).encode(), "application/json")
        assert status == 200, body
        got = pd.DataFrame(json.loads(body)["predictions"])[list(CLASSES)].to_numpy()
        assert got == pytest.approx(class_probabilities(model, pixels, 7), abs=1e-5)
        # pictures: MLflow's server takes JSON, CSV or Parquet bodies only; in JSON, bytes travel as base64
        picture = png(face("L", (48, 48)))
        table = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(picture).decode()]]}}
        status, body = post(f"{url}/invocations", json.dumps(table).encode(), "application/json")
        assert status == 200, body
        expected = class_probabilities(model, model_input(Image.open(io.BytesIO(picture)), GREY)[None], 7)
        assert pd.DataFrame(json.loads(body)["predictions"])[list(CLASSES)].to_numpy() == pytest.approx(
            expected, abs=1e-5
        )
        # the same picture as raw bytes: a Parquet body with a binary 'image' column (no base64)
        buffer = io.BytesIO()
        pd.DataFrame({"image": [picture]}).to_parquet(buffer)
        status, body = post(f"{url}/invocations", buffer.getvalue(), "application/vnd.apache.parquet")
        assert status == 200, body
        assert pd.DataFrame(json.loads(body)["predictions"])[list(CLASSES)].to_numpy() == pytest.approx(
            expected, abs=1e-5
        )
        # floats in [0, 1]: a 400 that says why (they used to be cast to uint8 zeros: four identical answers)
        status, body = post(
            f"{url}/invocations", json.dumps({"inputs": (pixels / 255).tolist()}).encode(), "application/json"
        )
        assert status == 400 and "multiply by 255" in json.loads(body)["message"], body
        # a raw image body is MLflow's 415, naming the content types it takes
        status, body = post(f"{url}/invocations", picture, "image/png")
        assert status == 415 and "application/json" in body, body
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)


def test_only_a_dvc_stage_in_the_workspace_is_the_current_experiment(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    monkeypatch.chdir(repo)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert not mlflow_model.is_current(repo / "models" / "fer2013")  # a side run by hand, outside DVC
    monkeypatch.setenv("DVC_ROOT", str(repo))
    assert mlflow_model.is_current(Path("models/fer2013"))  # dvc repro / dvc exp run in the workspace
    temp = repo / ".dvc" / "tmp" / "exps" / "run" / "x1"
    temp.mkdir(parents=True)
    monkeypatch.chdir(temp)
    assert not mlflow_model.is_current(Path("models/fer2013"))  # dvc exp run --queue / --temp
