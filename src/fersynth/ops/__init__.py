"""Operating the project, no stage depends on it: the warm server (``fersynth warm``), the local MLflow
tracking server with its PostgreSQL, and model versions for ``dvc artifacts get``."""
