"""``fersynth calibrate``: judge-ensemble calibration of generated faces' labels."""

from fersynth.annotate.calibrate.calibrate import CalibrateConfig, calibrate, load_judges
from fersynth.annotate.calibrate.judges import check_judges

__all__ = ["CalibrateConfig", "calibrate", "check_judges", "load_judges"]
