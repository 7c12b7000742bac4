"""Perceptual hashes of images: a fast 64-bit pHash, the Hamming distance between two, and the CPU stage.

The hash is imagehash's ``phash`` (greyscale, 32x32 Lanczos resize, 2-D DCT-II, the 8x8 lowest frequencies
compared with their median, 16 hex digits with the first coefficient as the top bit), computed faster:

* a large image is first shrunk with ``Image.reduce`` (a box filter, cheap) to at least 128 px per side, so the
  Lanczos resize to 32x32 works on ~1/64 of the pixels (imagehash's Lanczos over a 1024x1024 image is most of
  its cost); a JPEG file is decoded at 1/2..1/8 scale straight into greyscale (``Image.draft``);
* the DCT is one product with a precomputed 8x32 cosine matrix (only the 8 lowest frequencies are kept), not
  scipy's full 32x32 transform.

Images under 256 px per side are not reduced, so they hash exactly as imagehash does; larger ones differ by at
most 2 bits (bench/phash.py, tests/unit/test_phash.py), far inside the radius of 10 used for near-duplicates
(shared/reference/media-facts.md). PNG decoding is not sped up by any of this: from a PNG file, inflating the
pixels is most of the time (bench/README.md).

``phash_stage`` is a CPU stage's engine call (tasks/stages.py runs it in a child process): it reads one input
image and returns its hash as the stage's record, storing no file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from reelforge.records import StageOutput

__all__ = ["hamming", "phash_file", "phash_image", "phash_stage"]

HASH_SIDE = 8  # 8x8 coefficients = 64 bits
DCT_SIDE = 32  # imagehash's hash_size * highfreq_factor
REDUCED_SIDE = 4 * DCT_SIDE  # reduce() stops at >= 128 px: the Lanczos step then sees >= 4 source px per output px


def _dct_rows(n: int, keep: int) -> np.ndarray:
    """The first ``keep`` rows of scipy's unnormalised DCT-II matrix: ``2 cos(pi k (2i + 1) / 2n)``."""
    k = np.arange(keep, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    return 2.0 * np.cos(np.pi * k * (2.0 * i + 1.0) / (2.0 * n))


_DCT = _dct_rows(DCT_SIDE, HASH_SIDE)
_DCT_T = np.ascontiguousarray(_DCT.T)
# Coefficients that are zero in exact arithmetic (flat or symmetric images) come out as +-1e-12 noise here and
# in scipy alike; left as they are, their signs against a median of ~0 would decide bits at random.
_ZERO = 1e-6


def _small_grey(image: Image.Image) -> Image.Image:
    """The 32x32 greyscale image the DCT reads, through a box-filter reduction when the image is large."""
    if image.mode not in ("L", "RGB"):
        # reduce() premultiplies alpha and knows no palettes; imagehash's convert("L") drops alpha. Do the same.
        image = image.convert("L")
    fx, fy = max(1, image.width // REDUCED_SIDE), max(1, image.height // REDUCED_SIDE)
    if fx > 1 or fy > 1:
        image = image.reduce((fx, fy))
    return image.convert("L").resize((DCT_SIDE, DCT_SIDE), Image.Resampling.LANCZOS)


def phash_image(image: Image.Image) -> str:
    """The 64-bit pHash of a PIL image as 16 hex digits (imagehash's ``str(phash(image))`` format)."""
    pixels = np.asarray(_small_grey(image), dtype=np.float64)
    low = _DCT @ pixels @ _DCT_T
    low[np.abs(low) < _ZERO] = 0.0
    bits = low > np.median(low)
    return np.packbits(bits).tobytes().hex()


def phash_file(path: Path) -> tuple[str, int, int]:
    """``(pHash as 16 hex digits, width, height)`` of an image file; width and height are the file's own."""
    with Image.open(path) as image:
        width, height = image.size
        if image.format == "JPEG":
            # Decode the luma channel only, at the smallest 1/2^k scale that keeps >= 128 px per side.
            image.draft("L", (REDUCED_SIDE, REDUCED_SIDE))
        image.load()
        return phash_image(image), width, height


def hamming(a_hex: str, b_hex: str) -> int:
    """Number of differing bits between two hashes given as hex strings (``ValueError`` if not hex)."""
    return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()


def phash_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: the pHash of ``inputs["image"]`` as ``{"phash", "width", "height"}``."""
    digest, width, height = phash_file(inputs["image"])
    return StageOutput(record={"phash": digest, "width": width, "height": height})
