"""Pure routing decisions: eligibility, availability, affinity, least-busy, tie-breaks."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from reelforge.comfy.errors import NoEligibleWorker
from reelforge.comfy.graph import ModelRef
from reelforge.comfy.routing import (
    Requirement,
    WorkerSnapshot,
    any_eligible_healthy,
    choose_worker,
    eligibility,
)

BASE = frozenset({"EmptyImage", "SaveImage", "CheckpointLoaderSimple", "KSampler"})
SDXL = ModelRef(folder="checkpoints", name="sdxl.safetensors")
FLUX = ModelRef(folder="checkpoints", name="flux.safetensors")
LORA = ModelRef(folder="loras", name="hero.safetensors")
MODELS = {"checkpoints": frozenset({SDXL.name, FLUX.name}), "loras": frozenset({LORA.name})}


def snap(name: str, order: int = 0, **kw: Any) -> WorkerSnapshot:
    kw.setdefault("node_classes", BASE)
    kw.setdefault("models", MODELS)
    return WorkerSnapshot(name=name, url=f"http://{name}", order=order, **kw)


def ckpt_graph(ckpt: str) -> dict[str, dict[str, Any]]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }


def test_requirement_from_graph_collects_classes_models_and_affinity() -> None:
    req = Requirement.for_graph(ckpt_graph(SDXL.name), models=[LORA], label="gpu")
    assert req.node_classes == {"CheckpointLoaderSimple", "SaveImage"}
    assert req.models == {SDXL, LORA}
    assert req.affinity == {SDXL, LORA}  # a LoRA too: the worker that last applied it is preferred
    assert req.label == "gpu"


def test_the_worker_that_last_applied_a_lora_is_preferred() -> None:
    other = ModelRef(folder="loras", name="villain.safetensors")
    req = Requirement.for_graph(ckpt_graph(SDXL.name), models=[LORA])
    with_it = replace(snap("a"), last_models=frozenset({SDXL, LORA}), order=1)
    with_other = replace(snap("b"), last_models=frozenset({SDXL, other}), order=0)
    chosen = choose_worker([with_other, with_it], req, now=0.0)
    assert chosen is not None and chosen.name == "a"


def test_missing_node_classes_are_named() -> None:
    req = Requirement(node_classes=frozenset({"EmptyImage", "WanVaceToVideo", "VHS_VideoCombine"}))
    why = eligibility(snap("a"), req)
    assert why is not None
    assert "missing node classes" in why
    assert "VHS_VideoCombine" in why and "WanVaceToVideo" in why
    assert "EmptyImage" not in why


def test_missing_model_files_are_named() -> None:
    other = ModelRef(folder="loras", name="villain.safetensors")
    unknown_folder = ModelRef(folder="upscale_models", name="4x.pth")
    why = eligibility(snap("a"), Requirement(models=frozenset({LORA, other, unknown_folder})))
    assert why is not None
    assert "loras/villain.safetensors" in why and "upscale_models/4x.pth" in why
    assert "hero" not in why


def test_wrong_label() -> None:
    req = Requirement(label="video")
    assert eligibility(snap("a", labels=frozenset({"image"})), req) == "lacks label 'video' (has: image)"
    assert eligibility(snap("b", labels=frozenset({"image", "video"})), req) is None
    assert eligibility(snap("c"), Requirement()) is None  # no label asked: any worker
    assert eligibility(snap("d"), req) is None  # an unlabelled worker takes any job


def test_routes_by_node_classes_and_models() -> None:
    plain = snap("plain", 0, node_classes=frozenset({"EmptyImage", "SaveImage"}))
    no_lora = snap("no_lora", 1, models={"checkpoints": frozenset({SDXL.name})})
    full = snap("full", 2, in_flight=1)  # busier, but the only one with both
    req = Requirement.for_graph(ckpt_graph(SDXL.name), models=[LORA])
    chosen = choose_worker([plain, no_lora, full], req, now=0.0)
    assert chosen is not None and chosen.name == "full"


def test_no_eligible_worker_lists_every_reason() -> None:
    workers = [
        snap("a", labels=frozenset({"image"})),
        snap("b", labels=frozenset({"video"}), node_classes=frozenset({"SaveImage"})),
    ]
    req = Requirement(node_classes=frozenset({"EmptyImage"}), label="image")
    with pytest.raises(NoEligibleWorker) as info:
        choose_worker(workers[1:], req, now=0.0)
    assert set(info.value.reasons) == {"b"}
    assert "EmptyImage" in info.value.reasons["b"] and "label" in info.value.reasons["b"]
    assert "b:" in str(info.value)
    chosen = choose_worker(workers, req, now=0.0)
    assert chosen is not None and chosen.name == "a"


def test_no_workers_at_all_is_permanent() -> None:
    with pytest.raises(NoEligibleWorker):
        choose_worker([], Requirement(), now=0.0)


def test_affinity_beats_least_busy() -> None:
    idle = snap("idle", 0, in_flight=0, last_models=frozenset({FLUX}))
    warm = snap("warm", 1, in_flight=1, last_models=frozenset({SDXL}))
    chosen = choose_worker([idle, warm], Requirement.for_graph(ckpt_graph(SDXL.name)), now=0.0)
    assert chosen is not None and chosen.name == "warm"
    chosen = choose_worker([idle, warm], Requirement.for_graph(ckpt_graph(FLUX.name)), now=0.0)
    assert chosen is not None and chosen.name == "idle"


def test_alternating_models_settle_on_separate_workers() -> None:
    a = snap("a", 0, last_models=frozenset({SDXL}))
    b = snap("b", 1)  # nothing loaded yet
    chosen = choose_worker([a, b], Requirement.for_graph(ckpt_graph(FLUX.name)), now=0.0)
    assert chosen is not None and chosen.name == "b"  # do not evict SDXL from a
    # a job without affinity models does not care
    chosen = choose_worker([a, b], Requirement(node_classes=frozenset({"EmptyImage"})), now=0.0)
    assert chosen is not None and chosen.name == "a"


def test_affinity_ignored_when_that_worker_is_full() -> None:
    warm = snap("warm", 0, in_flight=2, capacity=2, last_models=frozenset({SDXL}))
    cold = snap("cold", 1, in_flight=1)
    chosen = choose_worker([warm, cold], Requirement.for_graph(ckpt_graph(SDXL.name)), now=0.0)
    assert chosen is not None and chosen.name == "cold"


def test_least_busy_then_stable_order() -> None:
    workers = [snap("a", 0, in_flight=1), snap("b", 1, in_flight=0), snap("c", 2, in_flight=0)]
    req = Requirement(node_classes=frozenset({"EmptyImage"}))
    chosen = choose_worker(workers, req, now=0.0)
    assert chosen is not None and chosen.name == "b"  # tie between b and c: configuration order
    chosen = choose_worker(list(reversed(workers)), req, now=0.0)
    assert chosen is not None and chosen.name == "b"  # independent of list order


def test_capacity_full_returns_none_not_error() -> None:
    workers = [snap("a", in_flight=2, capacity=2), snap("b", 1, in_flight=3, capacity=3)]
    req = Requirement(node_classes=frozenset({"EmptyImage"}))
    assert choose_worker(workers, req, now=0.0) is None
    assert any_eligible_healthy(workers, req, now=0.0)  # full, not down: the caller just waits
    freed = [workers[0], workers[1].with_in_flight(2)]
    chosen = choose_worker(freed, req, now=0.0)
    assert chosen is not None and chosen.name == "b"


def test_unhealthy_and_cooling_workers_are_skipped() -> None:
    req = Requirement(node_classes=frozenset({"EmptyImage"}))
    sick = snap("sick", 0, healthy=False)
    cooling = snap("cooling", 1, cooling_until=10.0)
    assert choose_worker([sick, cooling], req, now=5.0) is None
    assert not any_eligible_healthy([sick, cooling], req, now=5.0)
    chosen = choose_worker([sick, cooling], req, now=10.0)  # cooldown over
    assert chosen is not None and chosen.name == "cooling"
    # an unhealthy worker with the model loaded loses to a healthy cold one
    warm_sick = snap("warm", 2, healthy=False, last_models=frozenset({SDXL}))
    chosen = choose_worker([warm_sick, cooling], Requirement.for_graph(ckpt_graph(SDXL.name)), now=11.0)
    assert chosen is not None and chosen.name == "cooling"


def test_unknown_capabilities_mean_wait_not_fail() -> None:
    never_seen = snap("new", node_classes=None, models={}, healthy=False)
    req = Requirement(node_classes=frozenset({"Exotic"}))
    assert eligibility(never_seen, req) is None
    assert choose_worker([never_seen], req, now=0.0) is None
    # but a label mismatch is known without contacting the worker
    labelled = snap("new", node_classes=None, models={}, healthy=False, labels=frozenset({"image"}))
    with pytest.raises(NoEligibleWorker):
        choose_worker([labelled], Requirement(label="video"), now=0.0)


# ---------------------------------------------------------------------------------------------------------
# The pool's dispatcher and failover over fake clients (no sockets): fast checks of the bookkeeping.


class FakeClient:
    """Just enough of ComfyClient for WorkerPool: a worker that runs prompts after ``delay`` seconds."""

    def __init__(self, name: str, *, classes: set[str] | None = None, delay: float = 0.01) -> None:
        self.name = name
        self.url = f"http://{name}"
        self.classes = classes or {"EmptyImage", "SaveImage", "CheckpointLoaderSimple"}
        self.delay = delay
        self.down = False
        self.die_during_wait = 0  # the next N waits raise WorkerUnavailable after submit
        self.finish_before_dying = False  # ...but the prompt completes there first
        self.history: dict[str, dict[str, Any]] = {}
        self.submitted: list[str] = []
        self.running = 0
        self.max_running = 0

    def _check(self) -> None:
        from reelforge.comfy.errors import WorkerUnavailable

        if self.down:
            raise WorkerUnavailable("connection refused", worker=self.name)

    async def system_stats(self) -> dict[str, Any]:
        self._check()
        return {"system": {}}

    async def object_info(self, refresh: bool = False) -> dict[str, Any]:
        self._check()
        return {c: {} for c in self.classes}

    async def models(self, folder: str | None = None) -> list[str]:
        self._check()
        return ["checkpoints"] if folder is None else ["sdxl.safetensors", "flux.safetensors"]

    async def submit(self, graph: Any, *, prompt_id: str | None = None, owner: Any = None, **kw: Any) -> str:
        self._check()
        assert prompt_id is not None
        self.submitted.append(prompt_id)
        return prompt_id

    async def wait(self, prompt_id: str, *, timeout: float | None = None, on_progress: Any = None) -> Any:
        import asyncio

        from reelforge.comfy.errors import WorkerUnavailable
        from reelforge.comfy.types import JobResult

        if prompt_id in self.history:
            return JobResult(prompt_id=prompt_id, worker=self.name)
        self._check()
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        if self.die_during_wait:
            self.die_during_wait -= 1
            if self.finish_before_dying:
                self.history[prompt_id] = {"status": {"status_str": "success", "completed": True}}
            raise WorkerUnavailable("connection reset", worker=self.name, prompt_id=prompt_id)
        self.history[prompt_id] = {"status": {"status_str": "success", "completed": True}}
        return JobResult(prompt_id=prompt_id, worker=self.name)

    async def get_queue(self) -> Any:
        from reelforge.comfy.types import QueueState

        return QueueState()

    async def get_history(self, prompt_id: str) -> dict[str, Any] | None:
        self._check()
        return self.history.get(prompt_id)

    async def delete_pending(self, ids: list[str]) -> None:
        self._check()

    async def remove(self, prompt_id: str, *, settle: float = 0.0, interrupt_running: bool = True) -> Any:
        from reelforge.comfy.types import Removal

        if self.down:
            return Removal(prompt_id=prompt_id, worker=self.name, found="unknown", action="nothing", error="down")
        if prompt_id in self.history:
            return Removal(prompt_id=prompt_id, worker=self.name, found="finished", action="nothing", ended="success")
        return Removal(prompt_id=prompt_id, worker=self.name, found="unknown", action="nothing")

    async def aclose(self) -> None:
        pass


GRAPH: dict[str, dict[str, Any]] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


async def test_pool_keeps_at_most_capacity_in_flight_per_worker() -> None:
    import asyncio

    from reelforge.comfy.pool import WorkerPool

    fakes = [FakeClient("a", delay=0.02), FakeClient("b", delay=0.02)]
    seen: list[int] = []
    async with WorkerPool(fakes, queue_depth=1) as pool:  # type: ignore[arg-type]

        async def job(i: int) -> str:
            result = await pool.run(GRAPH, job_id=f"j{i}")
            seen.extend(s.in_flight for s in pool.snapshots())
            return result.worker

        workers = await asyncio.gather(*(job(i) for i in range(12)))
        assert all(s.in_flight == 0 for s in pool.snapshots())
    assert max(seen) <= 2
    assert sorted(set(workers)) == ["a", "b"]
    assert all(f.max_running <= 2 for f in fakes)


async def test_pool_fails_over_with_a_new_prompt_id() -> None:
    from reelforge.comfy.pool import WorkerPool

    a, b = FakeClient("a"), FakeClient("b")
    a.die_during_wait = 1
    async with WorkerPool([a, b], cooldown_base=5.0) as pool:  # type: ignore[arg-type]
        result = await pool.run(GRAPH, job_id="j")
        assert result.worker == "b"
        assert result.prompt_id != a.submitted[0]
        status = {s.name: s for s in pool.status()}
        assert not status["a"].healthy and status["a"].cooling_s > 3
        assert pool.failovers == 1


async def test_pool_returns_the_result_that_completed_before_the_failure() -> None:
    from reelforge.comfy.pool import WorkerPool

    a, b = FakeClient("a"), FakeClient("b", classes={"Other"})  # only a can run it
    a.die_during_wait = 1
    a.finish_before_dying = True
    async with WorkerPool([a, b]) as pool:  # type: ignore[arg-type]
        result = await pool.run(GRAPH, job_id="j")
    assert result.worker == "a" and result.prompt_id == a.submitted[0]
    assert len(a.submitted) == 1 and not b.submitted  # never ran twice
    assert pool.salvaged == 1


async def test_pool_gives_up_after_max_failovers() -> None:
    from reelforge.comfy.errors import WorkerUnavailable
    from reelforge.comfy.pool import WorkerPool

    a = FakeClient("a")
    a.die_during_wait = 10
    async with WorkerPool([a], max_failovers=1, cooldown_base=0.01) as pool:  # type: ignore[arg-type]
        with pytest.raises(WorkerUnavailable):
            await pool.run(GRAPH, job_id="j")
    assert len(a.submitted) == 2  # first try + one failover


async def test_pool_no_eligible_worker_is_raised_at_once() -> None:
    from reelforge.comfy.pool import WorkerPool

    async with WorkerPool([FakeClient("a", classes={"SaveImage"})]) as pool:  # type: ignore[arg-type]
        with pytest.raises(NoEligibleWorker) as info:
            await pool.run(GRAPH, job_id="j")
    assert "EmptyImage" in info.value.reasons["a"]


async def test_pool_all_down_raises_no_worker_available() -> None:
    from reelforge.comfy.errors import NoWorkerAvailable
    from reelforge.comfy.pool import WorkerPool

    a = FakeClient("a")
    async with WorkerPool([a], unavailable_timeout=0.3, cooldown_base=0.05) as pool:  # type: ignore[arg-type]
        a.down = True
        pool._mark_unhealthy(pool._workers[0], RuntimeError("gone"))
        with pytest.raises(NoWorkerAvailable):
            await pool.run(GRAPH, job_id="j")
        a.down = False  # it comes back: the health watcher brings it in after its cooldown
        result = await pool.run(GRAPH, job_id="k", timeout=5)
        assert result.worker == "a"
