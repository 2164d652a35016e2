"""``fersynth predict`` and ``fersynth serve``: trained emotion classifiers run on a user's photos (no stage
depends on this)."""
