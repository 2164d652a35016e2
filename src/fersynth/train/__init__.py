"""``fersynth train``: one classifier per experiment, its trials, model card and MLflow model."""
