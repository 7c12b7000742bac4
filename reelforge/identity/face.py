"""The ``face`` identity scorer: dlib's face recognition ResNet (128-d embeddings), from the ``identity`` extra.

Models come from the ``face_recognition_models`` package (installed files, nothing downloaded at run time):
dlib's HOG frontal face detector finds faces (the image upsampled once, so faces down to ~40 px are found), the
5-point shape predictor aligns the most confident one, and ``dlib_face_recognition_resnet_model_v1`` gives its
128-d descriptor. dlib's rule is "same person" below a Euclidean distance of 0.6; the similarity here is
``1 - distance / 1.2`` clipped to 0..1, so that rule is the default threshold 0.5 (distance 0 gives 1).

An image without a detected face is unscorable ("no face found"); references without one are left out, and
when no reference has one, scoring raises ``NoUsableReference``. dlib is imported on first use, so this module
imports without the extra and ``FaceScorer()`` raises ``ScorerUnavailable`` naming the install command.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from reelforge.identity.base import score_embeddings
from reelforge.identity.errors import ScorerUnavailable
from reelforge.identity.scores import Embedded, IdentityScores

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["DISTANCE_SCALE", "FaceModels", "FaceScorer", "face_similarity", "load_face_models"]

DISTANCE_SCALE = 1.2  # similarity 0.5 at dlib's same-person distance 0.6
INSTALL = "pip install 'reelforge[identity]'"
_MODEL_FILES = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")


def face_similarity(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """``1 - distance / 1.2`` of two 128-d descriptors, clipped to 0..1."""
    return float(np.clip(1.0 - float(np.linalg.norm(a - b)) / DISTANCE_SCALE, 0.0, 1.0))


@dataclass(frozen=True)
class FaceModels:
    """dlib's detector, shape predictor and recognition network (dlib objects: typed loosely, dlib has no stubs)."""

    detector: Any
    predictor: Any
    network: Any
    lock: threading.Lock  # dlib objects are not documented as thread-safe: one image at a time per process


_models: FaceModels | None = None
_models_lock = threading.Lock()


def _models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise ScorerUnavailable("face", "the face_recognition_models package", INSTALL)
    # Found by path rather than through the package's helper, which imports pkg_resources.
    return Path(spec.origin).parent / "models"


def load_face_models() -> FaceModels:
    """The models, loaded once per process (about 1 s); ``ScorerUnavailable`` without the extra."""
    global _models
    with _models_lock:
        if _models is not None:
            return _models
        try:
            import dlib
        except ImportError as exc:
            raise ScorerUnavailable("face", "dlib (the dlib-bin package)", INSTALL) from exc
        folder = _models_dir()
        missing = [name for name in _MODEL_FILES if not (folder / name).is_file()]
        if missing:
            raise ScorerUnavailable("face", f"model files {', '.join(missing)} in {folder}", INSTALL)
        _models = FaceModels(
            detector=dlib.get_frontal_face_detector(),
            predictor=dlib.shape_predictor(str(folder / _MODEL_FILES[0])),
            network=dlib.face_recognition_model_v1(str(folder / _MODEL_FILES[1])),
            lock=threading.Lock(),
        )
        return _models


def face_descriptor(models: FaceModels, rgb: NDArray[np.uint8], upsample: int = 1) -> NDArray[np.float64] | None:
    """The 128-d descriptor of the most confident face in an [H,W,3] uint8 image; None when there is none."""
    image = np.ascontiguousarray(rgb)
    with models.lock:
        boxes, confidences, _ = models.detector.run(image, upsample, 0.0)
        if len(boxes) == 0:
            return None
        box = boxes[int(np.argmax(confidences))]
        shape = models.predictor(image, box)
        descriptor = np.asarray(models.network.compute_face_descriptor(image, shape, 1), dtype=np.float64)
    return descriptor


@dataclass(frozen=True)
class FaceScorer:
    """Face-embedding identity scorer; threshold 0.5 = dlib's distance 0.6 (docs/identity.md)."""

    threshold: float = 0.5
    upsample: int = 1
    name: str = "face"

    def __post_init__(self) -> None:
        load_face_models()  # fail at construction, naming the extra, not in the middle of a run

    def embed(self, path: Path) -> Embedded[NDArray[np.float64]]:
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            return Embedded(path, None, f"unreadable image: {exc}")
        descriptor = face_descriptor(load_face_models(), rgb, self.upsample)
        if descriptor is None:
            return Embedded(path, None, "no face found")
        return Embedded(path, descriptor)

    def score(self, references: Sequence[Path], candidates: Sequence[Path]) -> IdentityScores:
        return score_embeddings(self.name, self.threshold, references, candidates, self.embed, face_similarity)
