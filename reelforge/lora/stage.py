"""LoRA validation as a CPU stage: a produced LoRA is checked before anything stores, delivers or uses it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reelforge.lora.validate import validate_lora
from reelforge.records import Product, StageOutput

__all__ = ["external_train_stage", "lora_check_stage"]


def lora_check_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: ``validate_lora(inputs["lora"], expected_rank=params["rank"], family=params["family"])``;
    raises ``LoraInvalid`` (naming the file and the first bad tensor), else records the report."""
    report = validate_lora(inputs["lora"], expected_rank=params.get("rank"), family=params.get("family"))
    record = report.model_dump(mode="json")
    record["file"] = inputs["lora"].name  # the job folder is temporary
    return StageOutput(record=record)


def external_train_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: train a LoRA outside ComfyUI on the stored training set ``inputs["dataset"]``.

    ``params``: ``command`` (with ``{config}``, ``{dataset}``, ``{output}``, ``{name}``), ``config`` (a
    ``TrainingConfig``), ``format`` (``ai-toolkit`` | ``kohya``), ``family`` (the base model's), ``timeout_s``.
    """
    from reelforge.lora.records import TrainingConfig
    from reelforge.lora.trainer import ExternalTrainer
    from reelforge.training import read_dataset

    _, _ = read_dataset(inputs["dataset"], out_dir / "dataset")
    trainer = ExternalTrainer(
        str(params["command"]), config_format=params.get("format", "ai-toolkit"),
        timeout_s=float(params.get("timeout_s", 4 * 3600.0)),
    )
    config = TrainingConfig.model_validate(params["config"])
    path = trainer.train(out_dir / "dataset", config, out_dir / "trained", family=params.get("family", "sdxl"))
    return StageOutput(products=[Product(path=path, kind="lora")], record={"trainer": "external", "file": path.name})
