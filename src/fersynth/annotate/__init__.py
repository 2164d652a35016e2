"""Stages that label or drop a variant's rows: ``reclassify`` (``relabel``), ``filter``, ``autolabel``,
``calibrate`` and the demographics (``demographics-train``, ``demographics-predict``)."""
