"""What a LoRA file's keys and shapes say: layout, modules, pairs, ranks, base model family (pure).

Keys are ``<module>.<part>``. Parts (the same in every layout but diffusers'):

* LoRA: ``lora_up.weight`` / ``lora_down.weight`` (kohya, ComfyUI), ``lora_B.weight`` / ``lora_A.weight``
  (diffusers / PEFT), ``lora.up.weight`` / ``lora.down.weight`` (older diffusers); optional ``lora_mid.weight``.
* LoHa ``hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b`` (+ ``hada_t1, hada_t2``), LoKr ``lokr_w1`` or
  ``lokr_w1_a/_b`` and ``lokr_w2`` or ``lokr_w2_a/_b``, OFT ``oft_blocks`` (ComfyUI's trainer's algorithms).
* ``alpha`` (a scalar) and ``dora_scale`` go with any of them.

Layouts by module name: **kohya** ``lora_unet_<path_with_underscores>``, ``lora_te[N]_...``,
``lora_transformer_...`` (no dots); **comfyui** ``diffusion_model.<dotted.path>`` / ``text_encoders.<...>``
(ComfyUI's TrainLoraNode and SaveLoRANode, and the preview worker); **diffusers** any module with
``lora_A``/``lora_B`` (or ``lora.up``/``lora.down``) parts (``unet.``, ``transformer.``, ``text_encoder.``,
``base_model.model.`` ...).

Family from module names (dots and underscores alike): ``double_blocks`` / ``single_blocks`` /
``single_transformer_blocks`` -> flux; ``joint_blocks`` -> sd3; ``input_blocks`` / ``middle_block`` /
``output_blocks`` / ``down_blocks`` / ``mid_block`` / ``up_blocks`` -> a UNet model, then SDXL vs SD 1.x/2.x
by the cross-attention width (``attn2.to_k`` input 2048 / 768 / 1024), transformer depth (SDXL has
``transformer_blocks.1+``), a second text encoder (``lora_te2_``, ``text_encoder_2``), attention at the
first UNet level (SD 1.x/2.x only) or at the lowest level on the way up (``output_blocks.0-2``: SDXL
only). Top-level ``transformer_blocks`` (diffusers Flux) count for flux when the hidden width is 3072.
The file's metadata (kohya ``ss_base_model_version``, ``modelspec.architecture``) decides only when the
keys do not.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from reelforge.lora.report import LoraFamily, LoraLayout, ProblemCode

__all__ = ["Analysis", "ModuleInfo", "TensorMeta", "analyse", "family_from_metadata", "split_key"]

TensorMeta = tuple[str, tuple[int, ...]]  # (dtype, shape)

# part -> (algorithm or None for the neutral parts, role, style)
_PARTS: dict[str, tuple[str | None, str, str]] = {
    "lora_up.weight": ("LoRA", "up", "kohya"),
    "lora_down.weight": ("LoRA", "down", "kohya"),
    "lora_mid.weight": ("LoRA", "mid", "kohya"),
    "lora_B.weight": ("LoRA", "up", "peft"),
    "lora_A.weight": ("LoRA", "down", "peft"),
    "lora.up.weight": ("LoRA", "up", "peft"),
    "lora.down.weight": ("LoRA", "down", "peft"),
    "hada_w1_a": ("LoHa", "w1_a", "kohya"),
    "hada_w1_b": ("LoHa", "w1_b", "kohya"),
    "hada_w2_a": ("LoHa", "w2_a", "kohya"),
    "hada_w2_b": ("LoHa", "w2_b", "kohya"),
    "hada_t1": ("LoHa", "t1", "kohya"),
    "hada_t2": ("LoHa", "t2", "kohya"),
    "lokr_w1": ("LoKr", "w1", "kohya"),
    "lokr_w1_a": ("LoKr", "w1_a", "kohya"),
    "lokr_w1_b": ("LoKr", "w1_b", "kohya"),
    "lokr_w2": ("LoKr", "w2", "kohya"),
    "lokr_w2_a": ("LoKr", "w2_a", "kohya"),
    "lokr_w2_b": ("LoKr", "w2_b", "kohya"),
    "lokr_t2": ("LoKr", "t2", "kohya"),
    "oft_blocks": ("OFT", "blocks", "kohya"),
    "alpha": (None, "alpha", "neutral"),
    "dora_scale": (None, "dora_scale", "neutral"),
}
# Longest first, so "lora.up.weight" is not read as module "x.lora" + part "up.weight".
_SUFFIXES = sorted(_PARTS, key=len, reverse=True)
_KOHYA_MODULE = re.compile(r"lora_(unet|te\d*|transformer)_[^.]+")
_COMFY_MODULE = re.compile(r"(diffusion_model|text_encoders)\.[^.].*")
_TEXT_ENCODER = re.compile(r"^(lora_te\d*_|text_encoders?(_\d+)?[._]|te\d?[._])|(^|[._])text_model[._]")

_FLUX = re.compile(r"(^|_)(double_blocks|single_blocks|single_transformer_blocks)_\d")
_SD3 = re.compile(r"(^|_)joint_blocks_\d")
_UNET = re.compile(r"(^|_)(input_blocks|middle_block|output_blocks|down_blocks|mid_block|up_blocks)_\d?")
_DIT_BLOCKS = re.compile(r"^(lora_transformer_|transformer_|diffusion_model_)?transformer_blocks_\d")
_DEEP_TRANSFORMER = re.compile(
    r"(input_blocks|middle_block|output_blocks|down_blocks|mid_block|up_blocks).*"
    r"transformer_blocks_([1-9]\d*)_"
)
# Attention at the first UNet level (and the last up level) exists in SD 1.x / 2.x, not in SDXL.
_SD1_LEVELS = re.compile(
    r"(^|_)(input_blocks_[12]_1_|down_blocks_0_attentions_|output_blocks_(9|10|11)_1_"
    r"|up_blocks_3_attentions_)"
)
# ... and attention at the lowest UNet level on the way up exists in SDXL only.
_SDXL_LEVELS = re.compile(r"(^|_)(output_blocks_[012]_1_|up_blocks_0_attentions_)")
_CROSS_ATTN = re.compile(r"attn2_to_[kv]$")
_CONTEXT_WIDTH: dict[int, LoraFamily] = {2048: "sdxl", 768: "sd15", 1024: "sd2"}

_REQUIRED: dict[str, tuple[str, ...]] = {"LoRA": ("up", "down"), "LoHa": ("w1_a", "w1_b", "w2_a", "w2_b")}
_ROLE_NAME = {  # (style, role) -> the part's name, for messages about a missing one
    ("kohya", "up"): "lora_up.weight",
    ("kohya", "down"): "lora_down.weight",
    ("peft", "up"): "lora_B.weight",
    ("peft", "down"): "lora_A.weight",
}


def split_key(key: str) -> tuple[str, str] | None:
    """``lora_unet_x.lora_up.weight`` -> (``lora_unet_x``, ``lora_up.weight``); None for no known part."""
    for suffix in _SUFFIXES:
        if key.endswith("." + suffix) and len(key) > len(suffix) + 1:
            return key[: -len(suffix) - 1], suffix
    return None


@dataclass
class ModuleInfo:
    """One adapted layer: its tensors by role, algorithm(s), layout and rank."""

    name: str
    parts: dict[str, str] = field(default_factory=dict)  # role -> full tensor name
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # role -> shape
    algorithms: set[str] = field(default_factory=set)
    styles: set[str] = field(default_factory=set)
    layout: LoraLayout = "unknown"
    rank: int | None = None

    @property
    def normalized(self) -> str:
        """Lower-case, ``.`` as ``_``: one spelling for kohya and dotted names."""
        return self.name.lower().replace(".", "_")

    def first_tensor(self) -> str:
        return min(self.parts.values())

    def features(self) -> tuple[int | None, int | None]:
        """(in, out) features of the adapted layer as the weights imply them; None where they do not say."""
        s = self.shapes
        if "down" in s and "up" in s and len(s["down"]) >= 2 and s["up"]:
            return s["down"][1], s["up"][0]
        if "w1_b" in s and "w1_a" in s and len(s["w1_b"]) >= 2 and s["w1_a"]:
            return s["w1_b"][1], s["w1_a"][0]
        w1 = s.get("w1") or _product(s.get("w1_a"), s.get("w1_b"))
        w2 = s.get("w2") or _product(s.get("w2_a"), s.get("w2_b"))
        if w1 is not None and w2 is not None and len(w1) >= 2 and len(w2) >= 2:  # LoKr: kron(w1, w2)
            return w1[1] * w2[1], w1[0] * w2[0]
        return None, None


@dataclass(frozen=True)
class Found:
    """A problem before the file's name is attached."""

    code: ProblemCode
    message: str
    tensor: str | None = None


@dataclass
class Analysis:
    layout: LoraLayout
    modules: dict[str, ModuleInfo]
    algorithms: list[str]
    ranks: list[int]
    family: LoraFamily
    family_source: Literal["keys", "metadata"] | None
    family_evidence: str | None  # a tensor whose name (or shape) gave the family away
    text_encoder: bool
    problems: list[Found]


def _module_layout(module: str, styles: set[str]) -> LoraLayout:
    if "peft" in styles:
        return "diffusers"
    if _KOHYA_MODULE.fullmatch(module):
        return "kohya"
    if _COMFY_MODULE.fullmatch(module):
        return "comfyui"
    return "unknown"


def _more(count: int, what: str) -> str:
    return f" (and {count} more {what})" if count else ""


def _check_pairs(module: ModuleInfo, found: list[Found]) -> None:
    style = "peft" if "peft" in module.styles else "kohya"
    if not module.algorithms:
        found.append(
            Found("missing_pair", f"{'/'.join(sorted(module.parts))} without any weights", module.first_tensor())
        )
        return
    if len(module.algorithms) > 1:
        found.append(
            Found(
                "mixed_algorithm",
                f"module {module.name!r} mixes {', '.join(sorted(module.algorithms))} weights",
                module.first_tensor(),
            )
        )
        return
    (algorithm,) = module.algorithms
    required = _REQUIRED.get(algorithm)
    if required is not None:
        missing = [r for r in required if r not in module.parts]
        if missing:
            present = next(r for r in (*required, "mid") if r in module.parts)
            want = ", ".join(_ROLE_NAME.get((style, m), m if algorithm != "LoHa" else f"hada_{m}") for m in missing)
            found.append(
                Found("missing_pair", f"has no matching {want} in module {module.name!r}", module.parts[present])
            )
    elif algorithm == "LoKr":
        for side in ("w1", "w2"):
            whole = side in module.parts
            halves = [h for h in (f"{side}_a", f"{side}_b") if h in module.parts]
            if not whole and len(halves) != 2:
                found.append(
                    Found(
                        "missing_pair",
                        f"has no lokr_{side} (nor both lokr_{side}_a and lokr_{side}_b) in module {module.name!r}",
                        module.first_tensor(),
                    )
                )


def _check_shapes(module: ModuleInfo, found: list[Found]) -> None:
    """Shapes of complete modules; sets ``module.rank`` where the weights define one."""
    s, p = module.shapes, module.parts
    if "alpha" in s and _numel(s["alpha"]) != 1:
        found.append(Found("bad_alpha", f"alpha has shape {list(s['alpha'])}, expected a scalar", p["alpha"]))
    algorithm = next(iter(module.algorithms)) if len(module.algorithms) == 1 else None
    if algorithm == "LoRA" and "up" in s and "down" in s:
        up, down = s["up"], s["down"]
        if len(down) not in (2, 4) or len(up) != len(down):
            found.append(
                Found(
                    "shape_mismatch",
                    f"shapes {list(up)} (up) and {list(down)} (down) are not a LoRA "
                    "pair (2-d, or 4-d for a convolution, both alike)",
                    p["up"],
                )
            )
        elif up[1] != down[0]:
            found.append(
                Found(
                    "shape_mismatch",
                    f"shape {list(up)} does not fit its down weight {list(down)}: "
                    f"up has {up[1]} columns, down has rank {down[0]}",
                    p["up"],
                )
            )
        else:
            module.rank = down[0]
    elif algorithm == "LoHa" and all(r in s for r in _REQUIRED["LoHa"]):
        w1a, w1b, w2a, w2b = (s[r] for r in _REQUIRED["LoHa"])
        if min(len(w1a), len(w1b), len(w2a), len(w2b)) < 2 or w1a[1] != w1b[0] or w2a[1] != w2b[0] or w1a[0] != w2a[0]:
            found.append(
                Found(
                    "shape_mismatch",
                    f"LoHa shapes disagree: w1_a {list(w1a)}, w1_b {list(w1b)}, w2_a {list(w2a)}, w2_b {list(w2b)}",
                    p["w1_a"],
                )
            )
        else:
            module.rank = w1b[0]
    elif algorithm == "LoKr":
        for side in ("w2", "w1"):  # w2 carries the rank in ComfyUI's and LyCORIS' factorisation
            a, b = s.get(f"{side}_a"), s.get(f"{side}_b")
            if a is None or b is None:
                continue
            if len(a) < 2 or len(b) < 1 or a[1] != b[0]:
                found.append(
                    Found("shape_mismatch", f"LoKr {side}_a {list(a)} does not fit {side}_b {list(b)}", p[f"{side}_a"])
                )
            elif module.rank is None:
                module.rank = b[0]
    elif algorithm == "OFT" and "blocks" in s:
        blocks = s["blocks"]
        if len(blocks) != 3 or blocks[1] != blocks[2]:
            found.append(
                Found(
                    "shape_mismatch",
                    f"OFT blocks have shape {list(blocks)}, expected [blocks, size, size]",
                    p["blocks"],
                )
            )


def _product(a: tuple[int, ...] | None, b: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The shape of ``a @ b`` for 2-d factors, None when either is missing or they do not chain."""
    if a is None or b is None or len(a) < 2 or len(b) < 2:
        return None
    return (a[0], b[1])


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def family_from_metadata(metadata: Mapping[str, str]) -> LoraFamily | None:
    """kohya's ``ss_base_model_version`` / ``modelspec.architecture`` -> family; None when neither says."""
    for key in ("modelspec.architecture", "ss_base_model_version"):
        value = metadata.get(key, "").lower()
        if not value:
            continue
        if "flux" in value:
            return "flux"
        if "sd3" in value or "stable-diffusion-3" in value:
            return "sd3"
        if "xl" in value:
            return "sdxl"
        if "v2" in value or "sd_2" in value:
            return "sd2"
        if "v1" in value or "sd_1" in value:
            return "sd15"
    return None


def _detect_family(
    modules: Mapping[str, ModuleInfo], metadata: Mapping[str, str], found: list[Found]
) -> tuple[LoraFamily, Literal["keys", "metadata"] | None, str | None]:
    """(family, source, evidence tensor); adds a ``mixed_family`` problem for Flux and UNet keys in one file."""
    evidence: dict[str, str] = {}  # kind of evidence -> first tensor showing it

    def saw(kind: str, module: ModuleInfo) -> None:
        tensor = module.first_tensor()
        if kind not in evidence or tensor < evidence[kind]:
            evidence[kind] = tensor

    for module in modules.values():
        name = module.normalized
        if _FLUX.search(name):
            saw("flux", module)
        if _SD3.search(name):
            saw("sd3", module)
        if _UNET.search(name):
            saw("unet", module)
            if _DEEP_TRANSFORMER.search(name) or _SDXL_LEVELS.search(name):
                saw("sdxl", module)
            if _SD1_LEVELS.search(name):
                saw("sd1", module)
            in_features, _ = module.features()
            if _CROSS_ATTN.search(name) and in_features is not None:
                width = _CONTEXT_WIDTH.get(in_features)
                if width is not None:
                    saw("sd1" if width != "sdxl" else "sdxl", module)
                    if width == "sd2":
                        saw("sd2", module)
        elif _DIT_BLOCKS.search(name):
            if 3072 in module.features():  # Flux's hidden width
                saw("flux", module)
            else:
                saw("dit", module)
        if name.startswith("lora_te2_") or name.startswith("text_encoder_2_"):
            saw("te2", module)
        if name.startswith("lora_te_"):
            saw("te_single", module)

    if "unet" in evidence and ("flux" in evidence or "sd3" in evidence):
        other = "flux" if "flux" in evidence else "sd3"
        found.append(
            Found(
                "mixed_family",
                f"keys of a {other} model and of a UNet model (SD/SDXL, e.g. {evidence['unet']!r}) in one file",
                evidence[other],
            )
        )
        return "unknown", None, None
    for family in ("flux", "sd3"):
        if family in evidence:
            return family, "keys", evidence[family]  # type: ignore[return-value]
    if "unet" in evidence:
        sdxl = evidence.get("sdxl") or evidence.get("te2")
        sd1 = evidence.get("sd1") or evidence.get("te_single")
        if sdxl and not sd1:
            return "sdxl", "keys", sdxl
        if sd1 and not sdxl:
            return ("sd2", "keys", evidence["sd2"]) if "sd2" in evidence else ("sd15", "keys", sd1)
    from_metadata = family_from_metadata(metadata)
    if from_metadata is not None:
        return from_metadata, "metadata", None
    return "unknown", None, None


def analyse(tensors: Mapping[str, TensorMeta], metadata: Mapping[str, str] | None = None) -> Analysis:
    """Layout, modules, ranks and family of a LoRA's tensors, and every structural problem found."""
    found: list[Found] = []
    modules: dict[str, ModuleInfo] = {}
    unknown: list[str] = []
    for key in sorted(tensors):
        split = split_key(key)
        if split is None:
            unknown.append(key)
            continue
        module_name, suffix = split
        algorithm, role, style = _PARTS[suffix]
        module = modules.setdefault(module_name, ModuleInfo(module_name))
        module.parts[role] = key
        module.shapes[role] = tensors[key][1]
        module.styles.add(style)
        if algorithm is not None:
            module.algorithms.add(algorithm)

    layouts: dict[LoraLayout, str] = {}  # layout -> first tensor in it
    for module in modules.values():
        module.layout = _module_layout(module.name, module.styles)
        if module.layout != "unknown" and module.algorithms:
            layouts.setdefault(module.layout, module.first_tensor())
    for module in modules.values():
        if module.layout == "unknown" and not module.algorithms and len(layouts) == 1:
            module.layout = next(iter(layouts))  # a lone alpha of a diffusers file: a missing pair, not a stray
        if module.layout == "unknown":
            unknown.append(module.first_tensor())
        else:
            layouts.setdefault(module.layout, module.first_tensor())
    unknown.sort()
    if tensors and not layouts:
        found.append(
            Found(
                "unknown_layout",
                f"no key of the {len(tensors)} is a LoRA key of a known layout "
                "(kohya lora_unet_*.lora_up.weight, diffusers *.lora_A.weight, ComfyUI "
                "diffusion_model.*.lora_up.weight)",
                min(tensors),
            )
        )
    elif unknown:
        found.append(
            Found(
                "unknown_key",
                "is not a LoRA key of the file's layout "
                f"({', '.join(sorted(layouts))}){_more(len(unknown) - 1, 'such keys')}",
                unknown[0],
            )
        )
    if len(layouts) > 1:
        shown = ", ".join(f"{name} (e.g. {tensor!r})" for name, tensor in sorted(layouts.items()))
        first = min(layouts.values())
        found.append(Found("mixed_layout", f"keys in more than one layout: {shown}", first))
    layout: LoraLayout = next(iter(layouts)) if len(layouts) == 1 else ("mixed" if layouts else "unknown")

    known = [m for m in modules.values() if m.layout != "unknown"]
    for module in known:
        before = len(found)
        _check_pairs(module, found)
        if len(found) == before:
            _check_shapes(module, found)
    _collapse(found, "missing_pair", "modules with a missing part")
    _collapse(found, "shape_mismatch", "modules whose shapes disagree")

    family, source, family_evidence = _detect_family({m.name: m for m in known}, metadata or {}, found)
    ranks = sorted({m.rank for m in known if m.rank is not None})
    algorithms = sorted({a for m in known for a in m.algorithms})
    text_encoder = any(_TEXT_ENCODER.search(m.name.lower()) for m in known)
    return Analysis(
        layout=layout,
        modules={m.name: m for m in known},
        algorithms=algorithms,
        ranks=ranks,
        family=family,
        family_source=source,
        family_evidence=family_evidence,
        text_encoder=text_encoder,
        problems=found,
    )


def _collapse(found: list[Found], code: str, what: str) -> None:
    """Keep the first problem of ``code`` (its message counting the others): one line, not one per layer."""
    same = [i for i, p in enumerate(found) if p.code == code]
    if len(same) < 2:
        return
    first = found[same[0]]
    found[same[0]] = Found(first.code, first.message + _more(len(same) - 1, what), first.tensor)
    for i in reversed(same[1:]):
        del found[i]


def rank_counts(modules: Mapping[str, ModuleInfo]) -> Counter[int]:
    """How many modules have each rank."""
    return Counter(m.rank for m in modules.values() if m.rank is not None)
