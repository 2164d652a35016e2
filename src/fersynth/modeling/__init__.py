"""Modelling machinery shared by the stages, one floor below them: decoded-array cache and batch loader
(``data``), training-time preprocessing (``preprocess``), networks (``architectures``), the small CNN's fit /
predict (``small_cnn``), the one checkpoint convention (``checkpoint``) and a trained classifier as consumers
load it (``trained``), metrics and figures, and a team of processes under ``torchrun`` (``process_group``).
Stages import from here, never from each other."""
