"""The demo job: a small image workflow of core nodes, varied per job so nothing is served from cache."""

from __future__ import annotations

import colorsys

from reelforge.comfy.types import Graph


def demo_color(index: int) -> int:
    """A distinct, saturated 24-bit colour per job index."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.65, 0.9)
    return (int(r * 255) << 16) | (int(g * 255) << 8) | int(b * 255)


def demo_graph(index: int, *, size: int = 256) -> Graph:
    """EmptyImage -> ImageScale (x2, bicubic) -> ImageInvert -> SaveImage, in ComfyUI API format."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": demo_color(index)},
            "_meta": {"title": "Canvas"},
        },
        "2": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["1", 0],
                "upscale_method": "bicubic",
                "width": size * 2,
                "height": size * 2,
                "crop": "disabled",
            },
            "_meta": {"title": "Upscale"},
        },
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}, "_meta": {"title": "Invert"}},
        "4": {
            "class_type": "SaveImage",
            "inputs": {"images": ["3", 0], "filename_prefix": f"demo/job{index:03d}"},
            "_meta": {"title": "Save"},
        },
    }
