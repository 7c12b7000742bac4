"""The fast pHash stays within 2 bits of imagehash's (speed is bench/phash.py's business)."""

from __future__ import annotations

from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from reelforge.media.phash import hamming, phash_file, phash_image, phash_stage


def picture(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour fields, noise, a few shapes, sometimes blurred: enough structure for a meaningful hash."""
    scale = np.float32(1 / max(width, height))
    y, x = np.ogrid[0:height, 0:width]
    y, x = y.astype(np.float32) * scale, x.astype(np.float32) * scale
    channels = [np.sin(x * rng.uniform(1, 12) + y * rng.uniform(-6, 6) + rng.uniform(0, 6)) for _ in range(3)]
    base = (np.stack(channels, -1) + 1) * np.float32(rng.uniform(60, 115))
    base += rng.standard_normal((height, width, 3), dtype=np.float32) * np.float32(rng.uniform(2, 30))
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 12))):
        xs, ys = sorted(rng.integers(0, width, 2)), sorted(rng.integers(0, height, 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((xs[0], ys[0], xs[1], ys[1]), fill=fill)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 4))))
    return image


def test_within_two_bits_of_imagehash_on_large_images() -> None:
    rng = np.random.default_rng(7)
    sizes = [(1024, 1024)] * 8 + [(1600, 1200), (1000, 1000), (300, 500), (768, 1344)]
    distances = []
    for width, height in sizes:
        image = picture(rng, width, height)
        distances.append(hamming(str(imagehash.phash(image)), phash_image(image)))
    assert max(distances) <= 2, distances


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_small_images_hash_exactly_as_imagehash(mode: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(4):
        image = picture(rng, 160, 120).convert(mode)
        assert phash_image(image) == str(imagehash.phash(image))


def test_flat_images_are_not_decided_by_rounding_noise() -> None:
    for colour in [(200, 30, 30), (0, 0, 0), (255, 255, 255), (17, 99, 180)]:
        for size in [(64, 48), (1024, 1024)]:
            image = Image.new("RGB", size, colour)
            expected = "0000000000000000" if colour == (0, 0, 0) else "8000000000000000"  # only DC, if any
            assert phash_image(image) == str(imagehash.phash(image)) == expected


def test_files_png_and_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    for i in range(4):
        image = picture(rng, 1024, 768)
        png, jpeg = tmp_path / f"{i}.png", tmp_path / f"{i}.jpg"
        image.save(png, compress_level=1)
        image.save(jpeg, quality=85)
        for path in (png, jpeg):
            digest, width, height = phash_file(path)
            assert (width, height) == (1024, 768)  # the file's size, not the reduced decode's
            with Image.open(path) as opened:
                assert hamming(digest, str(imagehash.phash(opened))) <= 2


def test_stage_record_and_hamming(tmp_path: Path) -> None:
    path = tmp_path / "img.png"
    image = picture(np.random.default_rng(5), 640, 480)
    image.save(path)
    out = phash_stage({"image": path}, {}, tmp_path)
    assert out.record == {"phash": phash_image(image), "width": 640, "height": 480}
    assert len(out.record["phash"]) == 16
    assert hamming("ffffffffffffffff", "0000000000000000") == 64
    assert hamming("8000000000000001", "0000000000000000") == 2
    assert hamming("abc", "abc") == 0
    with pytest.raises(ValueError):
        hamming("xyz", "00")
