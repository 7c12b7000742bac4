"""The identity test as a CPU stage: test images scored against the character's references."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reelforge.identity.registry import scorer_by_name
from reelforge.records import StageOutput

__all__ = ["identity_stage"]


def identity_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: inputs ``ref*`` (references) and ``test*`` (candidates), by name order; params ``scorer``
    and ``threshold`` (None: the scorer's own). The record is the scores, with file names instead of paths."""
    scorer = scorer_by_name(str(params.get("scorer", "appearance")), threshold=params.get("threshold"))
    references = [inputs[n] for n in sorted(inputs) if n.startswith("ref")]
    candidates = [inputs[n] for n in sorted(inputs) if n.startswith("test")]
    scores = scorer.score(references, candidates)
    names = {path: name for name, path in inputs.items()}
    record = scores.model_dump(mode="json")
    # Job folders are temporary: name each file by its input name, which the stage record maps to an artifact.
    for group in ("references", "candidates"):
        for entry in record[group]:
            entry["path"] = names.get(Path(entry["path"]), entry["path"])
    record["failing"] = [names.get(Path(p), str(p)) for p in record["failing"]]
    return StageOutput(record=record)
