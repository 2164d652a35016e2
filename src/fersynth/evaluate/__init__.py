"""``fersynth evaluate`` and ``fersynth evaluate-summary``: every trained model scored on every test set."""
