"""Built-in node implementations of the preview worker; importing this package registers them all."""

from reelforge.preview.nodes import audio, image, mask, video

__all__ = ["audio", "image", "mask", "video"]
