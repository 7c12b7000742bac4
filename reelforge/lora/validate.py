"""``validate_lora``: is this file a usable LoRA for the model we mean? Every problem is collected, then raised once.

Checked, in order: the size (empty, over ``max_bytes``); that ``safetensors`` parses it (else ``LoraUnreadable``
at once: nothing else can be read); at least one tensor; the key layout (``layout.py``: kohya, diffusers/PEFT,
ComfyUI); complete pairs with agreeing shapes; the rank against ``expected_rank``; the base model family against
``family``; the dtypes against ``dtypes``; NaN / inf in every float tensor (raw exponent bits: ``tensors.py``).
When torch is installed (the ``lora`` extra) it re-checks the values as a second opinion, never as the only one.

The report is returned when there is no problem; otherwise ``LoraInvalid`` carries it (``.report``) and every
problem (``.problems``), and its message is one line per problem, each naming the file and the first bad tensor.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from reelforge.hashing import sha256_file
from reelforge.lora.errors import LoraInvalid, LoraUnreadable
from reelforge.lora.layout import Analysis, Found, analyse, rank_counts
from reelforge.lora.report import DEFAULT_DTYPES, LoraFamily, LoraProblem, LoraReport, normalize_family
from reelforge.lora.tensors import (
    FLOAT_DTYPES,
    Header,
    TensorInfo,
    describe_parse_error,
    non_finite,
    open_header,
    read_scalars,
)

__all__ = ["DEFAULT_MAX_BYTES", "validate_lora"]

log = logging.getLogger(__name__)

# A rank-128 Flux LoRA over every linear layer in fp32 is about 2.6 GB; past 4 GiB a "LoRA" is a whole model.
DEFAULT_MAX_BYTES = 4 * 1024**3
_METADATA_VALUE_CHARS = 256  # kohya's ss_tag_frequency and friends can be megabytes: kept short in the report


def validate_lora(
    path: Path | str,
    *,
    expected_rank: int | None = None,
    family: LoraFamily | str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    dtypes: Iterable[str] = DEFAULT_DTYPES,
    cross_check: bool | None = None,
) -> LoraReport:
    """The report of a valid LoRA file; ``LoraInvalid`` (``LoraUnreadable``) naming every problem otherwise.

    ``family``: the expected base model family (``flux``, ``sdxl``, ``sd15``, ...; None: not checked).
    ``dtypes``: the safetensors dtypes allowed (``F16``, ``BF16``, ``F32`` by default).
    ``cross_check``: re-check the values with torch (None: when torch is installed; True: torch is required).
    """
    file = Path(path)
    shown = str(file)
    expected_family = normalize_family(family) if family is not None else None
    allowed = frozenset(dtypes)
    header, size = _parse(file, shown, max_bytes)

    tensors = list(header.tensors.values())
    analysis = analyse({t.name: (t.dtype, t.shape) for t in tensors}, header.metadata)
    found: list[Found] = []
    if not tensors:
        found.append(Found("no_tensors", "holds no tensors"))
    found += analysis.problems
    found += _rank_problems(analysis, expected_rank)
    found += _family_problems(analysis, expected_family)
    found += _dtype_problems(tensors, allowed)

    bad_values = non_finite(file, tensors)
    for name, (count, first, is_nan) in bad_values.items():
        tensor = header.tensors[name]
        what = "nan" if is_nan else "inf"
        found.append(
            Found(
                "non_finite",
                f"{count} of {tensor.numel} values are NaN or inf (first at flat index "
                f"{first}: {what}, dtype {tensor.dtype})",
                name,
            )
        )
    checked_with = None
    if cross_check is True or (cross_check is None and importlib.util.find_spec("torch") is not None):
        checked_with, disagreements = _torch_cross_check(file, tensors, set(bad_values))
        found += disagreements

    counts = rank_counts(analysis.modules)
    alpha_names = [m.parts["alpha"] for m in analysis.modules.values() if "alpha" in m.parts]
    alphas = set(read_scalars(file, [header.tensors[n] for n in alpha_names]).values())
    report = LoraReport(
        file=shown,
        size=size,
        sha256=sha256_file(file)[0],
        layout=analysis.layout,
        algorithms=analysis.algorithms,
        family=analysis.family,
        family_source=analysis.family_source,
        rank=next(iter(counts)) if len(counts) == 1 else None,
        ranks=analysis.ranks,
        alpha=next(iter(alphas)) if len(alphas) == 1 else None,
        modules=len(analysis.modules),
        text_encoder=analysis.text_encoder,
        tensors=len(tensors),
        dtypes=dict(sorted(Counter(t.dtype for t in tensors).items())),
        metadata={k: _cut(v) for k, v in sorted(header.metadata.items())},
        cross_check=checked_with,
        problems=[LoraProblem(code=f.code, message=f.message, file=shown, tensor=f.tensor) for f in found],
    )
    if report.problems:
        raise LoraInvalid(path=shown, problems=report.problems, report=report)
    return report


def _unreadable(shown: str, message: str, size: int | None = None) -> LoraUnreadable:
    problem = LoraProblem(code="not_safetensors" if size is None else "too_large", message=message, file=shown)
    return LoraUnreadable(path=shown, problems=[problem])


def _parse(file: Path, shown: str, max_bytes: int) -> tuple[Header, int]:
    try:
        size = os.stat(file).st_size
    except OSError as exc:
        raise _unreadable(shown, f"is not a safetensors file: {describe_parse_error(exc)}") from exc
    if size == 0:
        raise _unreadable(shown, "is not a safetensors file: the file is empty")
    if size > max_bytes:
        # Not parsed at all: a file this size is not what a LoRA stage should be handing on.
        raise _unreadable(shown, f"is {size} bytes, over the limit of {max_bytes} bytes for a LoRA", size)
    try:
        return open_header(file), size
    except Exception as exc:  # the library's own error type, OSError, JSON and struct errors alike
        raise _unreadable(shown, f"is not a safetensors file: {describe_parse_error(exc)}") from exc


def _rank_problems(analysis: Analysis, expected: int | None) -> list[Found]:
    if expected is None:
        return []
    wrong = sorted(
        (m for m in analysis.modules.values() if m.rank is not None and m.rank != expected),
        key=lambda m: m.parts.get("down", m.first_tensor()),
    )
    if wrong:
        first = wrong[0]
        tensor = first.parts.get("down") or first.parts.get("w1_b") or first.parts.get("w2_b") or first.first_tensor()
        others = f" ({len(wrong) - 1} more modules not rank {expected})" if len(wrong) > 1 else ""
        return [Found("rank_mismatch", f"has rank {first.rank}, expected {expected}{others}", tensor)]
    return []


def _family_problems(analysis: Analysis, expected: LoraFamily | None) -> list[Found]:
    if expected is None or analysis.layout == "unknown" or any(p.code == "mixed_family" for p in analysis.problems):
        return []  # nothing readable to compare, or already said
    if analysis.family == "unknown":
        return [Found("family_unknown", f"expected a {expected} LoRA, but its keys do not tell the base model")]
    if analysis.family != expected:
        how = "keys are" if analysis.family_source == "keys" else "metadata says"
        return [
            Found(
                "family_mismatch",
                f"expected a {expected} LoRA, but its {how} {analysis.family}'s",
                analysis.family_evidence,
            )
        ]
    return []


def _dtype_problems(tensors: list[TensorInfo], allowed: frozenset[str]) -> list[Found]:
    wrong = sorted((t for t in tensors if t.dtype not in allowed), key=lambda t: t.name)
    if not wrong:
        return []
    first = wrong[0]
    others = f" ({len(wrong) - 1} more tensors of other dtypes)" if len(wrong) > 1 else ""
    return [
        Found("dtype", f"has dtype {first.dtype}, expected one of {', '.join(sorted(allowed))}{others}", first.name)
    ]


def _cut(value: str) -> str:
    return value if len(value) <= _METADATA_VALUE_CHARS else value[: _METADATA_VALUE_CHARS - 3] + "..."


def _torch_cross_check(file: Path, tensors: list[TensorInfo], ours: set[str]) -> tuple[str | None, list[Found]]:
    """torch's verdict on which float tensors hold NaN/inf; a disagreement with the bit test is a problem."""
    try:
        import torch
        from safetensors import safe_open
    except ImportError as exc:
        return None, [Found("cross_check", f"torch was required for the cross-check but cannot be imported: {exc}")]
    theirs: set[str] = set()
    with safe_open(str(file), framework="pt") as opened:
        for tensor in tensors:
            if tensor.dtype not in FLOAT_DTYPES:
                continue
            value = opened.get_tensor(tensor.name)
            if not bool(torch.isfinite(value.float()).all()):
                theirs.add(tensor.name)
    found = [
        Found("cross_check", f"torch finds NaN/inf the bit test did not ({len(theirs - ours)} tensors)", n)
        for n in sorted(theirs - ours)[:1]
    ]
    found += [Found("cross_check", "the bit test finds NaN/inf torch does not", n) for n in sorted(ours - theirs)[:1]]
    if found:
        log.warning("LoRA value check: torch and the bit test disagree on %s", file)
    return f"torch {torch.__version__}", found
