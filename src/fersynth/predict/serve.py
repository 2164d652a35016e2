"""``fersynth serve``: a small web page to try a trained model on a photo (paper 001, Appendix A).

One FastAPI app (FastAPI and uvicorn come with MLflow): ``GET /`` is a page with a file picker; the page
posts the chosen picture's bytes to ``POST /predict`` (no multipart parser needed) and shows the annotated
picture and a table of faces, emotions and probabilities. The same :class:`~fersynth.predict.predict.Predictor`
as ``fersynth predict`` does the work, with the same decoder limits. The page says which model runs, what it
was trained on and what that means for a photo (a demo model means nothing on one). Binds 127.0.0.1 unless
told otherwise.
"""

from __future__ import annotations

import base64
import html
import io
import re
import threading
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from fersynth.predict.predict import PredictConfig, Predictor

MAX_UPLOAD_BYTES = 20 * 2**20

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


def create_app(model: str | Path, config: PredictConfig | None = None):
    """The FastAPI app serving ``model`` (``fer`` or a ``fersynth train`` model directory)."""
    predictor = Predictor(model, config or PredictConfig())
    lock = threading.Lock()  # one picture at a time: the model and MTCNN are not shared between threads
    app = FastAPI(title="fersynth", docs_url=None, redoc_url=None)
    page = render_page(predictor)

    def locked_annotate(image):
        with lock:
            return predictor.annotate(image, "upload")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.post("/predict")
    async def predict(request: Request):
        data = await request.body()
        if len(data) > MAX_UPLOAD_BYTES:
            return JSONResponse({"error": f"picture over {MAX_UPLOAD_BYTES // 2**20} MiB"}, status_code=413)
        try:
            image = predictor.read_picture(data)  # the same decoder and limits as `fersynth predict`
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        rows, annotated = await run_in_threadpool(locked_annotate, image)
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

    return app


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


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(model), host=host, port=port, log_level="info")
