"""``fersynth serve``: a small web page to try a trained model on a photo (paper 001, Appendix A).

One FastAPI app (FastAPI and uvicorn come with MLflow): ``GET /`` is a page with a file picker; the page
posts the chosen picture's bytes to ``POST /predict`` (no multipart parser needed) and shows the annotated
picture and a table of faces, emotions and probabilities. The same :class:`~fersynth.predict.predict.Predictor`
as ``fersynth predict`` does the work, with the same decoder limits. The page says which model runs, what it
was trained on and what that means for a photo (a demo model means nothing on one). Binds 127.0.0.1 unless
told otherwise.

A visitor is not trusted like a stage's input (:class:`ServeLimits`): a body is refused from its declared size
before it is read (413), pictures have a far lower pixel limit than ingest, checked from the header; uploads
queue for the one worker with a bounded queue (503 beyond it), and an upload whose client left while it waited
is never worked on. Every answer of ``POST /predict`` is JSON, errors included.
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from fersynth.predict.predict import PredictConfig, Predictor

CLIENT_GONE = 499  # nginx's "client closed request": logged only, nobody reads it


@dataclass(frozen=True)
class ServeLimits:
    """What the web app takes. ``max_pixels`` is a tenth of ingest's 40 MP: MTCNN on a 40 MP photo takes
    half a minute and 3 GB, and a page's visitors can send nine at once; ``max_waiting`` uploads may queue
    behind the one being worked on (each holding at most ``max_upload_bytes``), more are answered 503."""

    max_pixels: int = 4_000_000
    max_upload_bytes: int = 20 * 2**20
    max_waiting: int = 4

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_upload_bytes < 1 or self.max_waiting < 0:
            raise ValueError(
                f"max_pixels and max_upload_bytes must be >= 1 and max_waiting >= 0, got {self.max_pixels}, "
                f"{self.max_upload_bytes}, {self.max_waiting}"
            )


class UploadTooLarge(ValueError):
    """A body over the limit, declared or sent; the message is the answer's error."""


class Uploads:
    """The uploads admitted: the one in work and those waiting for their turn. Counted on the event loop's
    thread only, so a plain counter is safe; ``turn`` hands the one worker to the waiting uploads in order."""

    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self.admitted = 0
        self.turn = asyncio.Lock()

    def admit(self) -> bool:
        if self.admitted > self.max_waiting:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1

    def busy_message(self) -> str:
        return f"busy: 1 upload in work and {self.max_waiting} waiting; try again shortly"


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fersynth: emotions in a photo</title>
<style>
body { font-family: sans-serif; margin: 2em; max-width: 60em; }
table { border-collapse: collapse; margin-top: 1em; } td, th { border: 1px solid #999; padding: .2em .6em; }
#result { max-width: 100%; display: block; margin-top: 1em; } #status { margin-top: 1em; }
#about { border-left: .4em solid #c80; background: #fff4e0; padding: .5em 1em; }
#about.demo { border-color: #c00; background: #ffe8e8; }
</style></head>
<body>
<h1>Which emotion does each face show?</h1>
<div id="about" class="{kind_class}">
<p>Model: <code id="model">{model}</code> ({classes}); weights: <code>{weights}</code>.</p>
<p>Trained on: <span id="trained-on">{trained_on}</span>.</p>
<p><strong>Caveat:</strong> <span id="caveat">{caveat}</span>.</p>
</div>
<p>Faces are found with MTCNN; nothing is stored.</p>
<form id="form"><input type="file" id="file" accept="image/*"> <button type="submit" id="go">Predict</button></form>
<div id="status" data-state="idle"></div>
<img id="result" alt="">
<table id="faces"><thead><tr><th>face</th><th>box (x0, y0, x1, y1)</th><th>emotion</th>
<th>probability</th></tr></thead><tbody></tbody></table>
<script>
document.getElementById("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = document.getElementById("status");
  const file = document.getElementById("file").files[0];
  if (!file) { status.textContent = "Choose a picture first."; return; }
  status.dataset.state = "busy"; status.textContent = "Looking for faces...";
  const reply = await fetch("predict", {method: "POST", body: file,
    headers: {"Content-Type": file.type || "application/octet-stream"}});
  const answer = await reply.json();
  const body = document.querySelector("#faces tbody");
  body.replaceChildren();
  if (!reply.ok) { status.dataset.state = "error"; status.textContent = answer.error; return; }
  document.getElementById("result").src = answer.annotated;
  for (const face of answer.faces) {
    const row = body.insertRow();
    for (const value of [face.face, face.box.join(", "), face.emotion, face.probability.toFixed(3)]) {
      row.insertCell().textContent = value;
    }
  }
  status.dataset.state = "done";
  status.dataset.faces = answer.faces.length;
  status.textContent = answer.faces.length ? `${answer.faces.length} face(s)` : "No face found.";
});
</script>
</body></html>
"""


def create_app(model: str | Path, limits: ServeLimits | None = None):
    """The FastAPI app serving ``model`` (``fer`` or a ``fersynth train`` model directory) within ``limits``."""
    limits = limits or ServeLimits()
    predictor = Predictor(model, PredictConfig(max_pixels=limits.max_pixels))
    uploads = Uploads(limits.max_waiting)
    app = FastAPI(title="fersynth", docs_url=None, redoc_url=None)
    page = render_page(predictor)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # the page reads every answer as JSON: an unexpected error is one too, in one line
        return error_reply(f"internal error: {type(error).__name__}: {' '.join(str(error).split())}", 500)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        if not uploads.admit():  # before the body is read: a full queue buffers nothing more
            return error_reply(uploads.busy_message(), 503)
        try:
            return await answer_upload(request, predictor, limits, uploads.turn)
        finally:
            uploads.leave()

    return app


async def answer_upload(request: Request, predictor: Predictor, limits: ServeLimits, turn: asyncio.Lock):
    """Read the body within the limit, wait for the worker, and skip the work when the client has left
    meanwhile (a client that timed out must not keep the worker busy for half a minute)."""
    try:
        data = await read_body(request, limits.max_upload_bytes)
    except UploadTooLarge as error:
        return error_reply(str(error), 413)
    except ClientDisconnect:
        return error_reply("the client left while sending", CLIENT_GONE)
    async with turn:
        if await request.is_disconnected():
            return error_reply("the client left before its turn", CLIENT_GONE)
        try:
            rows, annotated = await run_in_threadpool(annotate_upload, predictor, data)
        except ValueError as error:  # not a picture, too large, too small for face detection
            return error_reply(" ".join(str(error).split()), 400)
    return JSONResponse(prediction_reply(predictor, rows, annotated))


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused from its Content-Length before a byte of it is read, and cut off at
    ``max_bytes`` when it comes without one (chunked): a 300 MB post is never buffered."""
    refusal = f"upload over {max_bytes / 2**20:g} MiB"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise UploadTooLarge(refusal)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise UploadTooLarge(refusal)
        chunks.append(chunk)
    return b"".join(chunks)


_WORKER = threading.Lock()  # the model and MTCNN are never used by two threads at once, whatever the event loop does


def annotate_upload(predictor: Predictor, data: bytes):
    """Decode (limits checked from the header first) and annotate one upload, in a worker thread."""
    with _WORKER:
        return predictor.annotate(predictor.read_picture(data), "upload")


def prediction_reply(predictor: Predictor, rows: list[dict], annotated) -> dict:
    """The JSON answer: one entry per face, the annotated picture as a data URL, the model's description."""
    buffer = io.BytesIO()
    annotated.save(buffer, format="PNG")
    faces = [
        {
            "face": row["face"],
            "box": [row["x0"], row["y0"], row["x1"], row["y1"]],
            "emotion": row["emotion"],
            "probability": row["probability"],
            "probabilities": {c: row[f"p_{c}"] for c in predictor.classes},
            "face_probability": row["face_probability"],
        }
        for row in rows
        if row["face"] != ""
    ]
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return {"faces": faces, "annotated": "data:image/png;base64," + encoded, "model": asdict(predictor.info)}


def error_reply(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def render_page(predictor: Predictor) -> str:
    """The page with the model's name, classes, weights, training data and caveat filled in (escaped: a path
    may hold any character)."""
    info = predictor.info
    fields = {
        "kind_class": "demo" if info.demo else info.kind,
        "model": info.name,
        "classes": ", ".join(predictor.classes),
        "weights": info.weights,
        "trained_on": info.trained_on,
        "caveat": info.caveat,
    }
    # one pass: a value holding "{caveat}" stays as it is
    return re.sub(r"\{(\w+)\}", lambda m: html.escape(fields[m[1]]) if m[1] in fields else m[0], PAGE)


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(model, limits), host=host, port=port, log_level="info")
