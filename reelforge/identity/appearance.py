"""The default identity scorer, ``appearance``: how alike the centre of two pictures looks (no model weights).

It is not face recognition. It crops the centred square of ``region`` x the shorter side (where a portrait
frames its subject, and where the preview worker draws its subject card), reduces it to 64x64 and describes it
by three things, each compared on its own:

* colour: a soft histogram of hue (16 bins) x saturation (3) x brightness (3) for coloured pixels, plus 6
  brightness bins for grey ones, compared by the Bhattacharyya coefficient (weight 0.3);
* colour layout: the same histogram for each quarter of the crop, the four coefficients averaged (0.5);
* brightness structure: the 63 lowest 2-D DCT frequencies of the 32x32 luminance (the DC term left out, so a
  uniform brightness change does not count), compared by cosine (weight 0.2).

Cosines below 0 count as 0; the similarity is in 0..1. A centre with almost no variation (a flat colour) has
nothing to compare and is unscorable ("flat image region"); an undecodable file is unscorable too.
Pure functions (``appearance_of``, ``appearance_similarity``) work on arrays; ``AppearanceScorer`` reads files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from reelforge.identity.base import score_embeddings
from reelforge.identity.scores import Embedded, IdentityScores

__all__ = ["Appearance", "AppearanceScorer", "appearance_of", "appearance_similarity", "centre_crop"]

SIDE = 64  # the crop is compared at 64x64
HUE_BINS, SAT_BINS, VAL_BINS, GREY_BINS = 16, 3, 3, 6
GREY_SAT = 0.12  # saturation below which a pixel counts as grey (fully at 0.12, not at all from 0.24)
WEIGHTS = (0.3, 0.5, 0.2)  # colour, colour layout, brightness structure
FLAT = 0.01  # below this spread of luminance and colour, the region is flat


@dataclass(frozen=True)
class Appearance:
    """An image centre's description: unit vectors (the histograms' square roots, the DCT coefficients)."""

    colour: np.ndarray
    quarters: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    luma: np.ndarray


def centre_crop(image: Image.Image, region: float) -> Image.Image:
    """The centred square of ``region`` x the shorter side, reduced to SIDE x SIDE RGB."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    side = max(1, round(region * min(w, h)))
    x0, y0 = (w - side) // 2, (h - side) // 2
    return rgb.crop((x0, y0, x0 + side, y0 + side)).resize((SIDE, SIDE), Image.Resampling.BOX)


@cache
def _dct_matrix(n: int, keep: int) -> np.ndarray:
    k = np.arange(keep)[:, None]
    i = np.arange(n)[None, :]
    m: np.ndarray = np.cos(np.pi * k * (2 * i + 1) / (2 * n))
    return m


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    out: np.ndarray = v / norm if norm > 1e-12 else np.zeros_like(v)
    return out


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    c = v - rgb.min(axis=-1)
    s = np.where(v > 0, c / np.maximum(v, 1e-12), 0.0)
    safe = np.maximum(c, 1e-12)
    h = np.where(
        v == r, ((g - b) / safe) % 6.0, np.where(v == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)
    )
    return np.where(c > 0, h / 6.0, 0.0), s, v


Bins = list[tuple[np.ndarray, np.ndarray]]


def _soft_bins(x: np.ndarray, lo: float, hi: float, n: int, circular: bool = False) -> Bins:
    """Each value split between its two nearest of ``n`` bins over lo..hi: [(bin index, weight)] x 2."""
    pos = (np.clip(x, lo, hi) - lo) / (hi - lo) * n - 0.5
    low = np.floor(pos).astype(int)
    frac = pos - low
    if circular:
        return [(low % n, 1.0 - frac), ((low + 1) % n, frac)]
    return [(np.clip(low, 0, n - 1), 1.0 - frac), (np.clip(low + 1, 0, n - 1), frac)]


def _colour_histogram(rgb: np.ndarray) -> np.ndarray:
    """Square roots of a soft hue x saturation x brightness histogram (+ grey brightness bins), unit length.

    Soft in every axis and in the colour/grey split, so that a small shift of a large area (a blur, a slight
    tint) moves weight between neighbouring bins instead of flipping the whole area into another bin.
    """
    h, s, v = (x.ravel() for x in _hsv(rgb))
    chroma = np.clip((s - GREY_SAT) / GREY_SAT, 0.0, 1.0) * np.clip((v - 0.05) / 0.1, 0.0, 1.0)
    hist = np.zeros(HUE_BINS * SAT_BINS * VAL_BINS + GREY_BINS, np.float64)
    for hi, hw in _soft_bins(h, 0.0, 1.0, HUE_BINS, circular=True):
        for si, sw in _soft_bins(s, GREY_SAT, 1.0, SAT_BINS):
            for vi, vw in _soft_bins(v, 0.1, 1.0, VAL_BINS):
                np.add.at(hist, (hi * SAT_BINS + si) * VAL_BINS + vi, chroma * hw * sw * vw)
    for gi, gw in _soft_bins(v, 0.0, 1.0, GREY_BINS):
        np.add.at(hist, HUE_BINS * SAT_BINS * VAL_BINS + gi, (1.0 - chroma) * gw)
    return _unit(np.sqrt(hist / max(1e-12, hist.sum())))


def appearance_of(rgb: np.ndarray) -> Appearance | str:
    """The description of a SIDE x SIDE RGB crop (floats 0..1), or why it has none."""
    a = np.asarray(rgb, dtype=np.float64)
    if a.ndim != 3 or a.shape[-1] != 3 or min(a.shape[:2]) < 8:
        return f"image region too small or not RGB (shape {a.shape})"
    luma = a @ np.array([0.299, 0.587, 0.114])
    if luma.std() < FLAT and (a - a.mean(axis=(0, 1))).std() < FLAT:
        return "flat image region: nothing to compare"
    small = np.asarray(Image.fromarray(luma.astype(np.float32)).resize((32, 32), Image.Resampling.BOX))
    d = _dct_matrix(32, 8)
    coeffs = (d @ small @ d.T).ravel()[1:]  # the DC term is overall brightness: left out
    hh, hw = a.shape[0] // 2, a.shape[1] // 2
    q = tuple(_colour_histogram(a[y : y + hh, x : x + hw]) for y in (0, hh) for x in (0, hw))
    return Appearance(colour=_colour_histogram(a), quarters=(q[0], q[1], q[2], q[3]), luma=_unit(coeffs))


def appearance_similarity(a: Appearance, b: Appearance) -> float:
    """0..1: weighted colour overlap, per-quarter colour overlap and brightness-structure cosine."""
    parts = (
        float(a.colour @ b.colour),
        sum(float(x @ y) for x, y in zip(a.quarters, b.quarters, strict=True)) / 4,
        max(0.0, float(a.luma @ b.luma)),
    )
    return float(sum(w * p for w, p in zip(WEIGHTS, parts, strict=True)))


def embed_file(path: Path, region: float) -> Embedded[Appearance]:
    """Read one image file and describe its centre (an undecodable file is unscorable, not an error)."""
    try:
        with Image.open(path) as image:
            crop = centre_crop(image, region)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return Embedded(path, None, f"unreadable image: {exc}")
    found = appearance_of(np.asarray(crop, dtype=np.float32) / np.float32(255.0))
    if isinstance(found, str):
        return Embedded(path, None, found)
    return Embedded(path, found)


@dataclass(frozen=True)
class AppearanceScorer:
    """The default scorer: centre appearance (see the module docstring); threshold 0.7 (docs/identity.md)."""

    threshold: float = 0.7
    region: float = 0.46  # inside the preview worker's card (0.5 of the shorter side), clear of its edges
    name: str = "appearance"

    def score(self, references: Sequence[Path], candidates: Sequence[Path]) -> IdentityScores:
        return score_embeddings(
            self.name,
            self.threshold,
            references,
            candidates,
            lambda p: embed_file(p, self.region),
            appearance_similarity,
        )
