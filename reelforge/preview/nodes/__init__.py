"""Built-in node implementations of the preview worker; importing this package registers every class.

The modules implement the classes graphs lean on; ``generic.register_remaining`` then registers every other
class of ComfyUI's catalogue with the generic, output-type driven implementation.
"""

from reelforge.preview.nodes import (
    acestep,  # video, music, custom packs: acestep, ipadapter, tts, wan
    audio,
    custom_sampler,  # the model families' own classes, outputs, weight-free utilities, the rest generic
    generic,
    image,
    ipadapter,
    loaders,  # model-based nodes: loaders, sampling, training, upscale
    mask,
    outputs,
    sampling,
    training,
    tts,
    upscale,
    utility,
    video,
    wan,
)

__all__ = ["audio", "image", "mask", "video"]
__all__ += ["loaders", "sampling", "training", "upscale"]
__all__ += ["acestep", "ipadapter", "tts", "wan"]
__all__ += ["custom_sampler", "generic", "outputs", "utility"]

GENERIC_CLASSES = generic.register_remaining()
