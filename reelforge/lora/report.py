"""What validating a LoRA file found: ``LoraReport`` and its ``LoraProblem`` s (pure pydantic models)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_DTYPES",
    "LORA_FAMILIES",
    "LoraFamily",
    "LoraLayout",
    "LoraProblem",
    "LoraReport",
    "ProblemCode",
    "normalize_family",
]

# Base model families told apart by their keys (and shapes); "unknown" when the keys do not say.
LoraFamily = Literal["flux", "sdxl", "sd15", "sd2", "sd3", "unknown"]
LORA_FAMILIES: tuple[str, ...] = get_args(LoraFamily)
# kohya: lora_unet_<module>.lora_up.weight; diffusers/PEFT: <module>.lora_A.weight; comfyui: what ComfyUI's
# TrainLoraNode / SaveLoRANode (and the preview worker) write: diffusion_model.<module>.lora_up.weight.
LoraLayout = Literal["kohya", "diffusers", "comfyui", "mixed", "unknown"]
ProblemCode = Literal[
    "not_safetensors",
    "too_large",
    "no_tensors",
    "unknown_layout",
    "unknown_key",
    "mixed_layout",
    "mixed_algorithm",
    "missing_pair",
    "shape_mismatch",
    "bad_alpha",
    "rank_mismatch",
    "family_mismatch",
    "family_unknown",
    "mixed_family",
    "dtype",
    "non_finite",
    "cross_check",
]
DEFAULT_DTYPES: frozenset[str] = frozenset({"F16", "BF16", "F32"})

_FAMILY_ALIASES = {
    "flux": "flux",
    "flux1": "flux",
    "flux.1": "flux",
    "sdxl": "sdxl",
    "xl": "sdxl",
    "sd15": "sd15",
    "sd1": "sd15",
    "sd1.5": "sd15",
    "sd_v1": "sd15",
    "sd2": "sd2",
    "sd_v2": "sd2",
    "sd3": "sd3",
}


def normalize_family(name: str) -> LoraFamily:
    """``"Flux"`` -> ``flux``, ``"SD1.5"`` -> ``sd15``; ``ValueError`` for a name that is no family."""
    family = _FAMILY_ALIASES.get(name.strip().lower().replace("-", "").replace(" ", ""))
    if family is None:
        raise ValueError(f"unknown base model family {name!r} (known: {', '.join(LORA_FAMILIES[:-1])})")
    return family  # type: ignore[return-value]


class LoraProblem(BaseModel):
    """One thing wrong with a LoRA file; ``str()`` names the file and the tensor."""

    model_config = ConfigDict(frozen=True)

    code: ProblemCode
    message: str
    file: str
    tensor: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}: tensor {self.tensor!r}" if self.tensor is not None else self.file
        return f"{where}: {self.message}"


class LoraReport(BaseModel):
    """Everything validation learnt about a LoRA file; ``problems`` is empty for a valid one."""

    model_config = ConfigDict(frozen=True)

    file: str
    size: int = Field(ge=0)
    sha256: str
    layout: LoraLayout
    algorithms: list[str] = Field(default_factory=list)  # LoRA, LoHa, LoKr, OFT
    family: LoraFamily = "unknown"
    family_source: Literal["keys", "metadata"] | None = None
    rank: int | None = None  # the rank when every module has the same one
    ranks: list[int] = Field(default_factory=list)  # every rank found, ascending
    alpha: float | None = None  # the alpha when every module has the same one
    modules: int = 0  # adapted layers
    text_encoder: bool = False  # some modules adapt a text encoder
    tensors: int = 0
    dtypes: dict[str, int] = Field(default_factory=dict)  # dtype -> tensor count
    metadata: dict[str, str] = Field(default_factory=dict)  # the file's string metadata, long values cut
    cross_check: str | None = None  # "torch 2.13.0" when torch re-checked the values
    problems: list[LoraProblem] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems
