"""fersynth: reproducible FER data and experiments with synthetic faces."""

__version__ = "0.1.0"
