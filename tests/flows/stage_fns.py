"""Engine functions used as CPU stages by the stage tests (module level: a child process imports them)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reelforge.records import Product, StageOutput
from reelforge.storage import StoreUnavailable


def _count(params: Mapping[str, Any]) -> int:
    """Append this call's pid to the counter file named by params["counter"]; returns how many calls so far."""
    path = Path(params["counter"])
    with path.open("a") as fh:
        fh.write(f"{os.getpid()}\n")
    return len(path.read_text().splitlines())


def upper_text(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Writes the upper-cased input text as a new file and reports its length."""
    calls = _count(params)
    text = inputs["text"].read_text(encoding="utf-8").upper()
    out = out_dir / "upper.txt"
    out.write_text(text, encoding="utf-8")
    return StageOutput(products=[Product(path=out, kind="text")], record={"length": len(text), "calls": calls})


def flaky(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Fails with a transient store error on the first call, then succeeds."""
    calls = _count(params)
    if calls == 1:
        raise StoreUnavailable("the store did not answer (test)")
    out = out_dir / "ok.json"
    out.write_text(json.dumps({"calls": calls}))
    return StageOutput(products=[Product(path=out, kind="json")], record={"calls": calls})


def broken(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Always fails with a permanent error."""
    _count(params)
    raise ValueError(f"bad input {params.get('value')!r}")


def sleepy(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Sleeps ``params["seconds"]`` (to test timeouts), recording its pid first."""
    _count(params)
    time.sleep(float(params["seconds"]))
    return StageOutput(record={"slept": params["seconds"]})


def pid_of_worker(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    return StageOutput(record={"pid": os.getpid()})
