"""`fersynth serve` under hostile uploads: bodies refused from their declared size, a pixel limit for the web
app checked from the header, a bounded queue answering 503, abandoned uploads never started, degenerate
pictures answered 400 with a reason, and model metadata escaped on the page. The app runs in uvicorn in a
thread, on a free loopback port, with the tiny trained model of tests/test_predict.py."""

from __future__ import annotations

import contextlib
import html
import http.client
import io
import json
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner
from PIL import Image

from fersynth.predict.predict import Predictor
from fersynth.predict.serve import ServeLimits, create_app
from tests.conftest import free_port
from tests.test_predict import GRACE_HOPPER, model  # noqa: F401 - `model`: the tiny trained model fixture

HOSTILE_CLASS = '<img src=x onerror="alert(1)">'


@contextlib.contextmanager
def served(app) -> Iterator[tuple[str, int]]:
    """(host, port) of ``app`` running in uvicorn in a thread until the block ends."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def post(address: tuple[str, int], body: bytes, timeout: float = 60) -> tuple[int, dict]:
    """(status, JSON answer) of ``POST /predict`` with ``body``."""
    connection = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        connection.request("POST", "/predict", body=body, headers={"Content-Type": "image/png"})
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def png(size: tuple[int, int], value: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


class BlockedWork:
    """Counts the calls of ``Predictor.annotate`` (the heavy step) and holds them until released."""

    def __init__(self):
        self.calls, self.started, self.release = 0, threading.Event(), threading.Event()


@pytest.fixture
def blocked(model, monkeypatch):  # noqa: F811 - the imported fixture
    """(app with the default limits, the counter of its heavy steps, which wait for ``release``)."""
    work, annotate = BlockedWork(), Predictor.annotate

    def held(self, image, source=""):
        work.calls += 1
        work.started.set()
        assert work.release.wait(60), "never released"
        return annotate(self, image, source)

    monkeypatch.setattr(Predictor, "annotate", held)
    yield create_app(model), work
    work.release.set()


def test_a_declared_300_mb_body_is_refused_413_before_it_is_read(model):  # noqa: F811
    with served(create_app(model)) as address:
        connection = http.client.HTTPConnection(*address, timeout=15)
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Length", str(300 * 2**20))
        connection.endheaders()
        connection.send(b"\x89PNG" + bytes(60_000))  # a start: the rest never comes
        reply = connection.getresponse()  # before the fix: waits for 300 MB, times out
        assert reply.status == 413 and json.loads(reply.read()) == {"error": "upload over 20 MiB"}
        connection.close()


def test_a_chunked_body_without_length_is_cut_off_at_the_limit(model):  # noqa: F811
    with served(create_app(model)) as address:
        connection = http.client.HTTPConnection(*address, timeout=15)
        connection.putrequest("POST", "/predict")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        chunk = bytes(2**20)
        for _ in range(21):  # 21 MiB, and no final chunk: the server must not wait for the end
            connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        reply = connection.getresponse()
        assert reply.status == 413 and json.loads(reply.read()) == {"error": "upload over 20 MiB"}
        connection.close()


def test_the_web_app_refuses_pictures_over_4_megapixels_from_the_header(model):  # noqa: F811
    with served(create_app(model)) as address:
        status, answer = post(address, png((2100, 2100)))  # 4.4 MP, under ingest's 40 MP
        assert status == 400 and answer == {"error": "too large: 2100x2100 pixels > max_pixels 4000000"}
    with served(create_app(model, ServeLimits(max_pixels=10_000))) as address:
        status, answer = post(address, png((101, 100)))
        assert status == 400 and answer == {"error": "too large: 101x100 pixels > max_pixels 10000"}


def test_pictures_too_thin_for_face_detection_are_400_with_a_reason(model):  # noqa: F811
    with served(create_app(model)) as address:
        for width, height in ((1, 1), (2, 3000), (3000, 2)):
            status, answer = post(address, png((width, height)))
            assert status == 400 and answer == {"error": f"too small: {width}x{height} < min_side 20"}


def test_uploads_beyond_the_queue_are_answered_503_at_once(blocked):
    app, work = blocked
    with served(app) as address, ThreadPoolExecutor(6) as pool:
        running = pool.submit(post, address, png((64, 64)))
        assert work.started.wait(30)
        waiting = [pool.submit(post, address, png((64, 64))) for _ in range(4)]  # the default queue: 4
        time.sleep(1.5)  # all four admitted and waiting their turn
        status, answer = post(address, png((64, 64)), timeout=10)  # before the fix: waits, times out
        assert status == 503 and answer == {"error": "busy: 1 upload in work and 4 waiting; try again shortly"}
        work.release.set()
        assert [future.result()[0] for future in [running, *waiting]] == [200] * 5
    assert work.calls == 5


def test_an_upload_whose_client_left_while_it_waited_is_never_started(blocked):
    app, work = blocked
    with served(app) as address, ThreadPoolExecutor(2) as pool:
        running = pool.submit(post, address, png((64, 64)))
        assert work.started.wait(30)
        gone = http.client.HTTPConnection(*address, timeout=10)
        gone.request("POST", "/predict", body=png((64, 64)))
        time.sleep(0.5)  # its body arrived: it waits its turn
        gone.close()  # the client times out and leaves
        time.sleep(1.0)
        work.release.set()
        assert running.result()[0] == 200
        assert post(address, png((64, 64)))[0] == 200  # served after the abandoned one's turn
    assert work.calls == 2  # the first and the last: the abandoned upload was never worked on


@pytest.fixture
def hostile_model(model, tmp_path):  # noqa: F811
    """The tiny model with a class named like markup."""
    copy = tmp_path / "hostile"
    shutil.copytree(model, copy)
    config_path = next(copy.rglob("config.json"))
    config = json.loads(config_path.read_text())
    config["classes"] = [HOSTILE_CLASS, *config["classes"][1:]]
    config_path.write_text(json.dumps(config))
    return copy, config["classes"]


def test_model_metadata_is_escaped_on_the_page_and_exact_in_the_json(hostile_model):
    model_dir, classes = hostile_model
    with served(create_app(model_dir)) as address:
        connection = http.client.HTTPConnection(*address, timeout=30)
        connection.request("GET", "/")
        page = connection.getresponse().read().decode()
        connection.close()
        status, answer = post(address, GRACE_HOPPER.read_bytes(), timeout=120)
    assert HOSTILE_CLASS not in page and "<img src=x" not in page
    assert html.escape(", ".join(classes)) in page
    (face,) = answer["faces"]
    assert status == 200 and list(face["probabilities"]) == classes  # JSON keeps the names exactly


def test_serve_options_reach_the_app(monkeypatch):
    from fersynth import cli
    from fersynth.predict import serve as serve_module

    calls = []
    monkeypatch.setattr(serve_module, "serve", lambda *args, **kwargs: calls.append((args, kwargs)))
    for options in (["--max-pixels", "2000000", "--max-waiting", "0"], []):
        done = CliRunner().invoke(cli.main, ["serve", "fer", *options])
        assert done.exit_code == 0, done.output
    assert calls == [
        (("fer", "127.0.0.1", 8000), {"limits": ServeLimits(max_pixels=2_000_000, max_waiting=0)}),
        (("fer", "127.0.0.1", 8000), {"limits": ServeLimits()}),  # the command's defaults are the app's
    ]
    assert ServeLimits() == ServeLimits(max_pixels=4_000_000, max_upload_bytes=20 * 2**20, max_waiting=4)
    with pytest.raises(ValueError, match="max_pixels"):
        ServeLimits(max_pixels=0)
