"""``python -m fersynth.cli`` (e.g. under ``torchrun``): the console script."""

from fersynth.cli import run

if __name__ == "__main__":
    run()
