"""``fersynth compare`` and ``fersynth summary``: is a difference between two experiments real (crossed seeds x
images statistics, Holm family), and the short verdicts ``dvc exp show`` lists."""
