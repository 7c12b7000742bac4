"""Built-in node implementations of the preview worker; importing this package registers them all."""

from reelforge.preview.nodes import (
    acestep,  # video, music, custom packs: acestep, ipadapter, tts, wan
    audio,
    image,
    ipadapter,
    loaders,  # model-based nodes: loaders, sampling, training, upscale
    mask,
    sampling,
    training,
    tts,
    upscale,
    video,
    wan,
)

__all__ = ["audio", "image", "mask", "video"]
__all__ += ["loaders", "sampling", "training", "upscale"]
__all__ += ["acestep", "ipadapter", "tts", "wan"]
