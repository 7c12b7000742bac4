"""Benchmark: reelforge's pHash against imagehash's on the same 1024x1024 images, in the same run.

Run: ``.venv/bin/python bench/phash.py [--images 48] [--rounds 3] [--size 1024] [--seed 0] [--strict]``

Images: ``--images`` generated pictures (sine-wave colour fields, Gaussian noise of varying strength, filled
ellipses and rectangles, blurred or not), saved as PNG (compress level 4, as ComfyUI's SaveImage) and as JPEG
(quality 90) in a temporary folder. Three measurements, each side alternating image by image so that load drifting
on a shared machine hits both alike:

(a) hash of a decoded image: ``imagehash.phash(image)`` vs ``phash_image(image)`` (target ratio >= 3);
(b) from a PNG file: ``imagehash.phash(Image.open(path))`` (decode included) vs ``phash_file(path)``;
(c) from a JPEG file: the same (``phash_file`` decodes JPEG at reduced scale, greyscale only).

Reported: images/s of both sides, the ratio ours / imagehash, and the largest Hamming distance between the two
hashes of any image (target <= 2; JPEG hashes compared with imagehash's hash of the same JPEG file).
Exit status 0, or 1 with ``--strict`` when (a)'s ratio is under 3 or a distance is over 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reelforge.media.phash import hamming, phash_file, phash_image

TARGET_RATIO = 3.0
TARGET_BITS = 2


def make_image(rng: np.random.Generator, size: int) -> Image.Image:
    """A varied, photo-like test picture: smooth colour fields, noise, shapes, sometimes blurred."""
    y, x = (axis.astype(np.float32) / np.float32(size) for axis in np.ogrid[0:size, 0:size])
    channels = [np.sin(x * rng.uniform(1, 12) + y * rng.uniform(-6, 6) + rng.uniform(0, 6)) for _ in range(3)]
    base = (np.stack(channels, -1) + 1) * np.float32(rng.uniform(60, 115))
    base += rng.standard_normal((size, size, 3), dtype=np.float32) * np.float32(rng.uniform(2, 30))
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 15))):
        a = rng.integers(0, size, 4)
        box = (int(min(a[0], a[2])), int(min(a[1], a[3])), int(max(a[0], a[2])), int(max(a[1], a[3])))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 4))))
    return image


def imagehash_file(path: Path) -> str:
    with Image.open(path) as image:
        return str(imagehash.phash(image))


def alternate(items: list[Any], left: Callable[[Any], str], right: Callable[[Any], str], rounds: int) -> tuple[
    float, float, list[str], list[str]
]:
    """Seconds per item of each side (mean over rounds), each item timed on both sides in turn."""
    spent = [0.0, 0.0]
    hashes: tuple[list[str], list[str]] = ([], [])
    for round_ in range(rounds):
        for item in items:
            for side, fn in enumerate((left, right)):
                started = time.perf_counter()
                digest = fn(item)
                spent[side] += time.perf_counter() - started
                if round_ == 0:
                    hashes[side].append(digest)
    count = rounds * len(items)
    return spent[0] / count, spent[1] / count, hashes[0], hashes[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    images = [make_image(rng, args.size) for _ in range(args.images)]
    with tempfile.TemporaryDirectory(prefix="reelforge-bench-phash-") as tmp:
        pngs, jpegs = [], []
        for i, image in enumerate(images):
            png, jpeg = Path(tmp) / f"{i:03d}.png", Path(tmp) / f"{i:03d}.jpg"
            image.save(png, compress_level=4)
            image.save(jpeg, quality=90)
            pngs.append(png)
            jpegs.append(jpeg)
        print(f"{args.images} images {args.size}x{args.size} made in {time.perf_counter() - started:.1f} s; "
              f"{args.rounds} rounds")
        # Warm-up: imagehash imports scipy's DCT on its first call.
        imagehash.phash(images[0])
        phash_image(images[0])

        rows = []
        ok = True
        cases: list[tuple[str, list[Any], Callable[[Any], str], Callable[[Any], str]]] = [
            ("(a) decoded image", images, lambda im: str(imagehash.phash(im)), phash_image),
            ("(b) PNG file", pngs, imagehash_file, lambda p: phash_file(p)[0]),
            ("(c) JPEG file", jpegs, imagehash_file, lambda p: phash_file(p)[0]),
        ]
        for name, items, theirs, ours in cases:
            t_theirs, t_ours, h_theirs, h_ours = alternate(items, theirs, ours, args.rounds)
            bits = [hamming(a, b) for a, b in zip(h_theirs, h_ours, strict=True)]
            ratio = t_theirs / t_ours
            rows.append((name, 1 / t_theirs, 1 / t_ours, ratio, max(bits), np.bincount(bits).tolist()))
            ok &= max(bits) <= TARGET_BITS
            if name.startswith("(a)"):
                ok &= ratio >= TARGET_RATIO

    print(f"{'case':<20} {'imagehash/s':>12} {'ours/s':>10} {'ratio':>7} {'max bits':>9}  bits histogram")
    for name, theirs_s, ours_s, ratio, worst, histogram in rows:
        print(f"{name:<20} {theirs_s:>12.1f} {ours_s:>10.1f} {ratio:>7.2f} {worst:>9d}  {histogram}")
    print(f"targets: (a) ratio >= {TARGET_RATIO:g}, max bits <= {TARGET_BITS} everywhere: "
          f"{'met' if ok else 'MISSED'}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
