"""LoRA validation as a CPU stage: a produced LoRA is checked before anything stores, delivers or uses it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reelforge.lora.validate import validate_lora
from reelforge.records import StageOutput

__all__ = ["lora_check_stage"]


def lora_check_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: ``validate_lora(inputs["lora"], expected_rank=params["rank"], family=params["family"])``;
    raises ``LoraInvalid`` (naming the file and the first bad tensor), else records the report."""
    report = validate_lora(inputs["lora"], expected_rank=params.get("rank"), family=params.get("family"))
    record = report.model_dump(mode="json")
    record["file"] = inputs["lora"].name  # the job folder is temporary
    return StageOutput(record=record)
