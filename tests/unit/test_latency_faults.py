"""Latency profiles, fault specs and output naming of the preview worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reelforge.preview.faults import Faults, FaultSpec, parse_faults
from reelforge.preview.latency import DEFAULT_SECONDS, GPU_SECONDS, parse_latency
from reelforge.preview.naming import next_output_path
from reelforge.preview.registry import NodeClass, NodeResult, catalogue


def _node(name: str, **kw: Any) -> NodeClass:
    schema = catalogue().get(name, {"input": {}, "output": []})
    return NodeClass(name=name, schema=schema, run=lambda ctx, inputs: NodeResult(), **kw)


def test_parse_latency_specs() -> None:
    assert parse_latency("instant").kind == "instant"
    assert parse_latency(None).kind == "instant"
    gpu = parse_latency("gpu")
    assert (gpu.kind, gpu.scale, gpu.spec) == ("gpu", 1.0, "gpu")
    assert parse_latency("gpu:0.5").scale == 0.5
    assert parse_latency("gpu:0.5").spec == "gpu:0.5"
    fixed = parse_latency("fixed:2")
    assert (fixed.kind, fixed.prompt_seconds, fixed.spec) == ("fixed", 2.0, "fixed:2")
    for bad in ("fast", "fixed", "fixed:x", "gpu:-1", "instant:3", "fixed:-2", "gpu:nan", "fixed:inf"):
        with pytest.raises(ValueError):
            parse_latency(bad)


def test_latency_plans() -> None:
    save, empty, unknown = _node("SaveImage"), _node("EmptyImage"), _node("SomethingNew")
    assert parse_latency("instant").plan(save, {}, 3).seconds == 0.0
    gpu = parse_latency("gpu")
    assert gpu.plan(save, {}, 3).seconds == GPU_SECONDS["SaveImage"]
    assert gpu.plan(empty, {}, 3).seconds < gpu.plan(save, {}, 3).seconds
    assert gpu.plan(unknown, {}, 3).seconds == DEFAULT_SECONDS
    assert parse_latency("gpu:10").plan(save, {}, 3).seconds == pytest.approx(10 * GPU_SECONDS["SaveImage"])
    assert parse_latency("fixed:1.5").plan(save, {}, 3).seconds == pytest.approx(0.5)
    assert parse_latency("fixed:1.5").plan(save, {}, 0).seconds == pytest.approx(1.5)


def test_model_loader_costs_more_the_first_time() -> None:
    loader = _node("CheckpointLoaderSimple", loads_model=("checkpoints", "ckpt_name"))
    gpu = parse_latency("gpu")
    first = gpu.plan(loader, {"ckpt_name": "a.safetensors"}, 2).seconds
    again = gpu.plan(loader, {"ckpt_name": "a.safetensors"}, 2).seconds
    other = gpu.plan(loader, {"ckpt_name": "b.safetensors"}, 2).seconds
    assert first > 10 * again and other == first
    gpu.reset()
    assert gpu.plan(loader, {"ckpt_name": "b.safetensors"}, 2).seconds == first


def test_sampler_steps_drive_progress_and_time() -> None:
    sampler = _node("MySampler", latency_key="KSampler")
    gpu = parse_latency("gpu")
    plan = gpu.plan(sampler, {"steps": 20}, 5)
    assert plan.steps == 20 and plan.seconds == pytest.approx(20 * 0.06)
    assert parse_latency("instant").plan(sampler, {"steps": 4}, 1).steps == 4
    assert gpu.plan(_node("SaveImage"), {"steps": 4}, 1).steps == 0


def test_parse_faults_grammar() -> None:
    spec = parse_faults("crash_at_node=2, restart_after=3,http500=0.2,drop_ws_after=5,slow_view=1.5,seed=1")
    assert spec == FaultSpec(
        crash_at_node=2, restart_after=3.0, http500=0.2, drop_ws_after=5, slow_view=1.5, seed=1
    )
    assert parse_faults("") == FaultSpec() == parse_faults(None)
    assert parse_faults("http500_next=3").http500_next == 3
    for bad in (
        "crash",
        "crash_at_node=x",
        "crash_at_node=0",
        "http500=2",
        "bogus=1",
        "seed=1,seed=2",
        "slow_view=-1",
        "http500=nan",
        "slow_view=inf",
    ):
        with pytest.raises(ValueError):
            parse_faults(bad)
    with pytest.raises(ValueError, match=r"unknown fault 'nope' in 'nope=2' \(known: crash_at_node, "):
        parse_faults("nope=2")
    with pytest.raises(ValueError, match="fault 'seed' needs an integer, got 'x'"):
        parse_faults("seed=x")


def test_faults_runtime_arming() -> None:
    faults = Faults("crash_at_node=2")
    assert [faults.crash_now() for _ in range(4)] == [False, True, False, False]
    assert faults.crashes == 1
    faults.arm_crash(after_nodes=0)
    assert faults.crash_now() is True
    faults.arm_crash(after_nodes=1, restart_after=0.5)
    assert faults.restart_after == 0.5
    faults.clear()
    assert faults.crash_now() is False

    faults.http500_next(2)
    assert [faults.http500_now() for _ in range(3)] == [True, True, False]

    a, b = Faults("http500=0.5,seed=7"), Faults("http500=0.5,seed=7")
    draws = [a.http500_now() for _ in range(50)]
    assert draws == [b.http500_now() for _ in range(50)]
    assert 5 < sum(draws) < 45

    drops = Faults("drop_ws_after=3")
    assert [drops.ws_frame_sent() for _ in range(5)] == [False, False, True, False, False]
    called: list[int] = []
    drops.drop_ws_hook = lambda: called.append(1)
    drops.drop_ws()
    assert called == [1]


def test_next_output_path_counts_across_extensions(tmp_path: Path) -> None:
    path, name, sub = next_output_path(tmp_path, "probeG", "webp")
    assert (name, sub, path) == ("probeG_00001_.webp", "", tmp_path / "probeG_00001_.webp")
    path.write_bytes(b"x")
    (tmp_path / "probeG_00002_.webm").write_bytes(b"x")
    (tmp_path / "probeGX_00009_.png").write_bytes(b"x")  # another prefix: ignored
    _, name, _ = next_output_path(tmp_path, "probeG", ".png")
    assert name == "probeG_00003_.png"
    path, name, sub = next_output_path(tmp_path, "video/ComfyUI", "mp4")
    assert (name, sub) == ("ComfyUI_00001_.mp4", "video") and path.parent.is_dir()
    with pytest.raises(ValueError):
        next_output_path(tmp_path, "../escape", "png")
