"""``fersynth validate`` and ``fersynth data-docs``: the quality suite every variant passes before anything reads
it (integrity, label and split expectations, leakage between variants) and the offline Data Docs site."""
