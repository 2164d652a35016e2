"""Stages that label or drop a variant's rows: ``relabel`` (``relabel``), ``filter``, ``autolabel``,
``calibrate`` and the demographics (``demographics-train``, ``demographics-predict``)."""
