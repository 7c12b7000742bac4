"""The ``face`` scorer (dlib's ResNet embeddings, the ``identity`` extra) on scikit-image's astronaut photo.

Skipped where the extra is not installed (CI installs only ``.[test]``): ``pip install -e '.[identity]'``
plus ``scikit-image`` for the photo (``skimage.data.astronaut()``, shipped inside the package).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from reelforge.identity import FaceScorer, NoUsableReference, scorer_by_name

_MISSING = [m for m in ("dlib", "face_recognition_models", "skimage") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"needs {', '.join(_MISSING)}: the face scorer is the optional 'identity' extra "
    "(pip install -e '.[identity]' scikit-image); CI installs only '.[test]'",
)


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def _save(image: Image.Image, folder: Path, name: str) -> Path:
    path = folder / name
    image.save(path)
    return path


def test_the_same_face_altered_scores_high(astronaut: Image.Image, tmp_path: Path) -> None:
    scorer = scorer_by_name("face")
    assert isinstance(scorer, FaceScorer) and scorer.threshold == 0.5
    ref = _save(astronaut, tmp_path, "ref.png")
    altered = {
        "itself": astronaut,
        "flipped": ImageOps.mirror(astronaut),
        "cropped": astronaut.crop((100, 0, 360, 260)),  # the head and shoulders only
        "brighter": ImageEnhance.Brightness(astronaut).enhance(1.4),
        "darker": ImageEnhance.Brightness(astronaut).enhance(0.6),
        "smaller": astronaut.resize((320, 320)),
    }
    # The copy of itself as PNG (identical pixels), the alterations as JPEG (quality 75: one more alteration).
    paths = [_save(img.convert("RGB"), tmp_path, f"{name}.{'png' if name == 'itself' else 'jpg'}")
             for name, img in altered.items()]
    result = scorer.score([ref], paths)
    scores = {name: c.score for name, c in zip(altered, result.candidates, strict=True)}
    print(scores)
    assert result.passed, scores
    assert scores["itself"] is not None and scores["itself"] > 0.99
    assert all(s is not None and s > 0.7 for s in scores.values()), scores


def test_no_face_is_reported_not_scored(astronaut: Image.Image, tmp_path: Path) -> None:
    from skimage import data

    ref = _save(astronaut, tmp_path, "ref.png")
    cat = _save(Image.fromarray(data.chelsea()), tmp_path, "cat.png")  # a cat: no human face
    ramp = np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))
    gradient = _save(Image.fromarray(ramp).convert("RGB"), tmp_path, "ramp.png")
    result = FaceScorer().score([ref], [cat, gradient, ref])
    cat_score, ramp_score, self_score = result.candidates
    assert (cat_score.scorable, cat_score.score, cat_score.reason) == (False, None, "no face found")
    assert ramp_score.reason == "no face found" and self_score.passed
    assert not result.passed and result.failing == [cat, gradient]
    with pytest.raises(NoUsableReference, match="no face found"):
        FaceScorer().score([cat], [ref])
