"""WorkerPool against real preview workers on loopback: routing, affinity, shallow queue, failover, health."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.errors import NoEligibleWorker
from reelforge.comfy.graph import ModelRef
from reelforge.comfy.pool import WorkerPool
from reelforge.preview.registry import NodeRegistry, default_registry
from reelforge.preview.server import PreviewWorker

pytestmark = pytest.mark.timeout(60)

MakeWorker = Callable[..., Awaitable[PreviewWorker]]
MakeClient = Callable[..., ComfyClient]

CKPT_A = ModelRef(folder="checkpoints", name="alpha.safetensors")
CKPT_B = ModelRef(folder="checkpoints", name="beta.safetensors")


def image_graph(seed: int, *, invert: bool = False) -> dict[str, dict[str, Any]]:
    graph: dict[str, dict[str, Any]] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": seed % 0xFFFFFF},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "pool"}},
    }
    if invert:
        graph["2"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
        graph["3"]["inputs"]["images"] = ["2", 0]
    return graph


def put_model(worker_root: Path, ref: ModelRef) -> None:
    path = worker_root / "models" / ref.folder / ref.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[ComfyClient] = []

    def factory(worker: PreviewWorker, name: str) -> ComfyClient:
        # A short unreachable grace so that a crashed worker is given up on within a second.
        client = ComfyClient(
            worker.url, name=name, poll_interval=0.2, unreachable_grace=1.0, request_timeout=5
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


def track_submits(clients: list[ComfyClient]) -> dict[str, str]:
    """Record prompt id -> job id for every submission (before the POST, so a lost one is known too)."""
    owners: dict[str, str] = {}
    for client in clients:
        original = client.submit

        async def submit(graph: Any, *, _orig: Any = original, **kw: Any) -> str:
            owners[kw["prompt_id"]] = kw["owner"].job_id
            result: str = await _orig(graph, **kw)
            return result

        client.submit = submit  # type: ignore[method-assign]
    return owners


def executions_per_job(workers: list[PreviewWorker], owners: dict[str, str]) -> collections.Counter[str]:
    """How many times each job ran to completion, from the workers' own execution records."""
    done: collections.Counter[str] = collections.Counter()
    for worker in workers:
        for prompt_id, _start, _end in worker.stats.intervals:
            done[owners.get(prompt_id, f"unknown:{prompt_id}")] += 1
    return done


async def wait_until(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_running(worker: PreviewWorker, within: float = 5.0) -> None:
    async with httpx.AsyncClient(base_url=worker.url) as http:
        deadline = time.monotonic() + within
        while not (await http.get("/queue")).json()["queue_running"]:
            assert time.monotonic() < deadline, "nothing started running"
            await asyncio.sleep(0.02)


async def test_routes_by_node_classes_models_and_labels(
    make_worker: MakeWorker, make_client: MakeClient, tmp_path: Path
) -> None:
    full = default_registry()
    no_invert = NodeRegistry({k: v for k, v in full.classes.items() if k != "ImageInvert"})
    w_plain = await make_worker(registry=no_invert, root=tmp_path / "plain")  # lacks ImageInvert
    w_full = await make_worker(root=tmp_path / "full")  # lacks the model file
    put_model(w_plain.root, CKPT_A)
    clients = [make_client(w_plain, "plain"), make_client(w_full, "full")]
    async with WorkerPool(clients, labels={clients[0].url: {"image"}, clients[1].url: {"video"}}) as pool:
        assert {s.name: s.node_classes for s in pool.status()}["plain"] == len(no_invert.classes)
        for i in range(3):
            assert (await pool.run(image_graph(i, invert=True))).worker == "full"
            assert (await pool.run(image_graph(10 + i), models=[CKPT_A])).worker == "plain"
            assert (await pool.run(image_graph(20 + i), label="video")).worker == "full"
        executed = w_plain.stats.prompts_executed + w_full.stats.prompts_executed
        with pytest.raises(NoEligibleWorker) as info:
            await pool.run(image_graph(99, invert=True), models=[CKPT_A])
        reasons = info.value.reasons
        assert "ImageInvert" in reasons["plain"] and "checkpoints/alpha.safetensors" in reasons["full"]
        with pytest.raises(NoEligibleWorker):
            await pool.run(image_graph(98, invert=True), label="video", models=[CKPT_A])
        # A model file that appears later is found (the pool re-reads model lists before giving up).
        put_model(w_full.root, CKPT_B)
        assert (await pool.run(image_graph(97), models=[CKPT_B])).worker == "full"
    assert w_plain.stats.prompts_executed + w_full.stats.prompts_executed == executed + 1


async def test_affinity_sends_jobs_back_to_the_worker_holding_the_model(
    make_worker: MakeWorker, make_client: MakeClient
) -> None:
    workers = [await make_worker(), await make_worker()]
    for w in workers:
        put_model(w.root, CKPT_A)
        put_model(w.root, CKPT_B)
    async with WorkerPool([make_client(w, f"w{i}") for i, w in enumerate(workers)]) as pool:
        placed: dict[str, set[str]] = {"a": set(), "b": set()}
        for i in range(8):
            key, ref = ("a", CKPT_A) if i % 2 == 0 else ("b", CKPT_B)
            placed[key].add((await pool.run(image_graph(i), models=[ref])).worker)
        assert len(placed["a"]) == 1 and len(placed["b"]) == 1
        assert placed["a"] != placed["b"]
        last = {s.name: s.last_models for s in pool.status()}
        assert last[placed["a"].pop()] == [str(CKPT_A)]
        assert last[placed["b"].pop()] == [str(CKPT_B)]


async def test_shallow_queue_never_holds_more_than_one_pending(
    make_worker: MakeWorker, make_client: MakeClient
) -> None:
    slow = await make_worker(latency="fixed:0.3")
    fast = await make_worker(latency="fixed:0.05")
    clients = [make_client(slow, "slow"), make_client(fast, "fast")]
    samples: list[tuple[int, int]] = []
    stop = asyncio.Event()

    async def sample() -> None:
        async with httpx.AsyncClient(base_url=slow.url) as http:
            while not stop.is_set():
                queue = (await http.get("/queue")).json()
                samples.append((len(queue["queue_running"]), len(queue["queue_pending"])))
                await asyncio.sleep(0.01)

    async with WorkerPool(clients, queue_depth=1) as pool:
        sampler = asyncio.create_task(sample())
        results = await asyncio.gather(*(pool.run(image_graph(i), job_id=f"j{i}") for i in range(6)))
        stop.set()
        await sampler
    on_slow = sum(r.worker == "slow" for r in results)
    assert samples and max(r + p for r, p in samples) <= 2  # 1 running + queue_depth pending
    assert max(p for _, p in samples) == 1  # the next prompt was waiting there: no idle GPU
    assert on_slow <= 2 < 6 - on_slow  # the rest stayed re-routable and went to the fast worker
    # Back-to-back execution on the slow worker: no gap between its prompts.
    spans = sorted((s, e) for _, s, e in slow.stats.intervals)
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    assert all(g < 0.05 for g in gaps), gaps


@pytest.mark.parametrize("admission", ["local", "shared"])
async def test_crash_mid_job_fails_over_and_every_job_runs_exactly_once(
    make_worker: MakeWorker, make_client: MakeClient, admission: str
) -> None:
    workers = [await make_worker(latency="fixed:0.3") for _ in range(3)]
    clients = [make_client(w, f"w{i}") for i, w in enumerate(workers)]
    owners = track_submits(clients)
    jobs = 12
    async with WorkerPool(clients, queue_depth=1, cooldown_base=5.0, admission=admission) as pool:  # type: ignore[arg-type]
        batch = asyncio.gather(*(pool.run(image_graph(i), job_id=f"job{i}") for i in range(jobs)))
        await wait_running(workers[0])
        await asyncio.sleep(0.1)
        await workers[0].crash()
        results = await asyncio.wait_for(batch, 30)
        status = {s.name: s for s in pool.status()}
        assert not status["w0"].healthy
        assert pool.failovers >= 1
    assert len({r.prompt_id for r in results}) == jobs
    assert all(r.outputs for r in results)
    done = executions_per_job(workers, owners)
    assert done == {f"job{i}": 1 for i in range(jobs)}, done  # none lost, none run twice
    # The failed-over jobs had been submitted to w0 first, and finished elsewhere under a new prompt id.
    submits = collections.Counter(owners.values())
    moved = [r for r in results if submits[owners[r.prompt_id]] > 1]
    assert moved and all(r.worker != "w0" for r in moved)


async def test_restarted_worker_loses_the_prompt_and_the_job_reruns_elsewhere(
    make_worker: MakeWorker, make_client: MakeClient
) -> None:
    w0 = await make_worker(latency="fixed:1.0")
    w1 = await make_worker(latency="fixed:0.1")
    clients = [make_client(w0, "w0"), make_client(w1, "w1")]
    owners = track_submits(clients)
    async with WorkerPool(clients, cooldown_base=0.3, health_interval=0.2) as pool:
        job = asyncio.create_task(pool.run(image_graph(1), job_id="lost"))
        await wait_running(w0)
        await w0.restart()  # same port, empty queue and history
        result = await asyncio.wait_for(job, 15)
        assert result.worker == "w1"
        first = [p for p, j in owners.items() if j == "lost"]
        assert len(first) == 2 and result.prompt_id == first[1]  # a new prompt id for the re-run
        assert not w0.stats.intervals  # the first run never completed there
        # w0 answers again: after its cooldown the pool takes it back.
        await wait_until(lambda: {s.name: s.healthy for s in pool.status()}["w0"], 5, "w0 healthy again")


async def test_unhealthy_worker_comes_back_after_cooldown(
    make_worker: MakeWorker, make_client: MakeClient
) -> None:
    worker = await make_worker()
    async with WorkerPool([make_client(worker, "w0")], health_interval=0.1, cooldown_base=0.2) as pool:
        await worker.crash()
        await wait_until(lambda: not pool.status()[0].healthy, 5, "the crash to be noticed")
        assert pool.status()[0].last_error
        job = asyncio.create_task(pool.run(image_graph(5), job_id="waits", timeout=20))
        await asyncio.sleep(0.8)
        assert not job.done()  # waits for a worker instead of failing
        failures = pool.status()[0].consecutive_failures
        assert failures >= 2  # cooling down, re-checked, still down: the backoff grew
        await worker.restart()
        result = await asyncio.wait_for(job, 10)
        assert result.worker == "w0"
        status = pool.status()[0]
        assert status.healthy and status.consecutive_failures == 0 and status.node_classes


async def test_prepare_uploads_inputs_to_the_chosen_worker(
    make_worker: MakeWorker, make_client: MakeClient, tmp_path: Path
) -> None:
    from PIL import Image

    source = tmp_path / "reference.png"
    Image.new("RGB", (12, 10), (10, 200, 30)).save(source)
    workers = [await make_worker() for _ in range(2)]
    clients = [make_client(w, f"w{i}") for i, w in enumerate(workers)]
    prepared_on: list[str] = []

    async def prepare(client: ComfyClient, graph: dict[str, Any]) -> dict[str, Any]:
        uploaded = await client.upload(source, filename=source.name)
        prepared_on.append(client.name)
        graph = {**graph, "1": {"class_type": "LoadImage", "inputs": {"image": uploaded.ref}}}
        return graph

    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "prep"}},
    }
    async with WorkerPool(clients) as pool:
        results = await asyncio.gather(*(pool.run(graph, prepare=prepare) for _ in range(4)))
    assert sorted(prepared_on) == sorted(r.worker for r in results)
    for result in results:
        (output,) = result.outputs
        client = pool.client_for(result.worker)
        path = await client.download(output, tmp_path / "out" / result.prompt_id)
        with Image.open(path) as image:
            assert image.size == (12, 10)
            pixel = image.convert("RGB").getpixel((0, 0))
            assert isinstance(pixel, tuple)  # inverted (10, 200, 30); ComfyUI truncates floats to uint8
            assert all(e - 1 <= p <= e for p, e in zip(pixel, (245, 55, 225), strict=True)), pixel


async def test_waiting_jobs_are_served_by_priority_then_arrival(make_worker: MakeWorker, make_client: MakeClient
                                                                ) -> None:
    """One worker, no queue: while one job runs, jobs of priorities 5, 1, 5, 1 wait; they run 1, 1, 5, 5 (each
    priority in arrival order)."""
    from reelforge.comfy import JOB_PRIORITY

    worker = await make_worker(latency="fixed:0.3")
    order: list[str] = []
    async with WorkerPool([make_client(worker, "w")], queue_depth=0) as pool:
        async def job(name: str, priority: int, seed: int) -> None:
            JOB_PRIORITY.set(priority)  # the task's own context copy
            await pool.run(image_graph(seed), job_id=name)
            order.append(name)

        first = asyncio.create_task(job("first", 9, 1))
        await asyncio.sleep(0.1)  # it holds the only slot
        waiting = []
        for seed, (name, priority) in enumerate([("a5", 5), ("b1", 1), ("c5", 5), ("d1", 1)], start=2):
            waiting.append(asyncio.create_task(job(name, priority, seed)))
            await asyncio.sleep(0.02)  # they arrive a5, b1, c5, d1
        await asyncio.gather(first, *waiting)
    assert order == ["first", "b1", "d1", "a5", "c5"]


async def _two_orchestrators(
    workers: list[PreviewWorker], make_client: MakeClient, admission: str, jobs: int
) -> tuple[list[WorkerPool], list[Any]]:
    """Two pools with their own clients over the same workers: what two orchestrator processes see."""
    pools = [
        WorkerPool([make_client(w, f"w{i}") for i, w in enumerate(workers)], queue_depth=1,
                   admission=admission)  # type: ignore[arg-type]
        for _ in range(2)
    ]
    async with pools[0], pools[1]:
        results = await asyncio.gather(
            *(pools[n % 2].run(image_graph(n), job_id=f"{admission}-{n}") for n in range(jobs))
        )
    return pools, results


async def test_shared_admission_keeps_two_orchestrators_within_one_plus_queue_depth(
    make_worker: MakeWorker, make_client: MakeClient
) -> None:
    workers = [await make_worker(latency="fixed:0.15") for _ in range(2)]
    pools, results = await _two_orchestrators(workers, make_client, "shared", 16)
    assert len({r.prompt_id for r in results}) == 16
    # Every job ran once, and no worker ever held more than 1 running + 1 pending prompt that went on to run.
    assert sum(w.stats.prompts_executed for w in workers) == 16
    assert [w.stats.max_held(kept_only=True) for w in workers] == [2, 2]
    # A prompt taken back as the overshoot never ran; the GPU was never idle while jobs waited.
    withdrawn = {pid for w in workers for pid, (_, _, gone) in w.stats.held.items() if gone}
    ran = {pid for w in workers for pid, _, _ in w.stats.intervals}
    assert not withdrawn & ran
    assert sum(p.withdrawn for p in pools) == len(withdrawn)
    for w in workers:
        spans = sorted((s, e) for _, s, e in w.stats.intervals)
        assert all(b[0] - a[1] < 0.1 for a, b in itertools.pairwise(spans))


async def test_local_admission_lets_two_orchestrators_overfill_a_worker(
    make_worker: MakeWorker, make_client: MakeClient
) -> None:
    # The same scene without shared admission: each pool counts only its own prompts (what the shared mode fixes).
    workers = [await make_worker(latency="fixed:0.15") for _ in range(2)]
    _, results = await _two_orchestrators(workers, make_client, "local", 16)
    assert len(results) == 16
    assert max(w.stats.max_held() for w in workers) == 4


async def test_shared_admission_counts_prompts_from_elsewhere(
    make_worker: MakeWorker, make_client: MakeClient
) -> None:
    # A person queues three prompts on the first worker from the ComfyUI page: the pool leaves it alone.
    busy = await make_worker(latency="fixed:1.5")
    free = await make_worker(latency="fixed:0.05")
    async with httpx.AsyncClient(base_url=busy.url) as http:
        for n in range(3):
            (await http.post("/prompt", json={"prompt": image_graph(1000 + n)})).raise_for_status()
    async with WorkerPool([make_client(busy, "busy"), make_client(free, "free")], admission="shared") as pool:
        results = await asyncio.gather(*(pool.run(image_graph(n), job_id=f"j{n}") for n in range(4)))
        others = {s.name: s.others for s in pool.status()}
    assert {r.worker for r in results} == {"free"}
    assert others == {"busy": 3, "free": 0} or others == {"busy": 2, "free": 0}  # one may have finished
    assert pool.declined >= 1  # a slot granted on the busy worker was declined after reading its queue
