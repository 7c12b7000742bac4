"""Batch flow: many characters from a CSV, or generated from a type (a K-pop group with roles), each its own run.

    plan (CSV rows checked one by one, or generated) -> names claimed across the system (names/<slug>.json)
    -> every good row a character run (a subflow sharing this process's worker pool, or a deployment run),
       at most REELFORGE_BATCH_CONCURRENCY at once, within the budget -> summary table + batches/<id>/summary.json
       (+ groups/<group>/<id>.json for a group) -> Completed when every row was made, Failed otherwise.

A failed character never stops the others; rows the CSV got wrong are reported (row, column, value, why) and
never run; rows the budget left undone say so. Cancelling the batch cancels its character runs and their prompts
(their own cancel scopes in this process, the batch hooks for deployed runs), and nothing of any other run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from prefect import flow
from prefect.artifacts import acreate_table_artifact
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.states import Completed, Failed
from pydantic import BaseModel, Field
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.character import CharacterResult, character_flow
from reelforge.batch import BatchSummary, Budget, NameClaims, RowOutcome, read_source, resolve_names
from reelforge.characters import BatchFileError, BatchPlan, BatchRow, Composition, UnknownType, generate, read_csv
from reelforge.comfy import JOB_PRIORITY
from reelforge.engine import Engine, open_engine, share_engine
from reelforge.errors import InputRejected
from reelforge.hashing import sha256_bytes
from reelforge.settings import Settings
from reelforge.storage import (
    ArtifactRef,
    batch_key,
    character_manifest_key,
    group_key,
    read_manifest,
    run_manifest_key,
    safe_slug,
)
from tasks.cancellation import cancel_scope, on_batch_cancellation, on_batch_crashed
from tasks.context import current_flow_run_id
from tasks.events import batch_finished
from tasks.progress import FlowProgress, ProgressSnapshot, Step, add_listener
from tasks.retry import is_infrastructure_failure

__all__ = ["BatchResult", "batch_flow", "print_batch_summary"]

log = logging.getLogger(__name__)

ROW_RETRY_DELAY_S = 5.0  # before a character's second run; x4 for each further one, at most a minute


class BatchResult(BaseModel):
    """The batch's summary and where it is stored."""

    batch_id: str
    summary_key: str
    summary_uri: str
    group_key: str | None = None
    summary: BatchSummary


def _plan(
    settings: Settings, *, csv: str | None, character_type: str | None, count: int | None, group: str | None,
    composition: Composition | None, seed: int,
) -> tuple[BatchPlan, str, bytes]:
    """The plan, a description of its source, and the bytes its name-claim owner is made from."""
    limits = settings.batch
    if csv is not None:
        if character_type is not None or count is not None or group is not None or composition is not None:
            raise InputRejected("csv: give either a CSV or character_type/count/group/composition, not both")
        data = read_source(csv, settings.store, max_bytes=limits.max_bytes)
        base_dir = None if csv.startswith("s3://") else Path(csv).expanduser().resolve().parent
        plan = read_csv(data, source=csv, seed=seed, max_bytes=limits.max_bytes,
                        max_variations=settings.character.max_variations, base_dir=base_dir)
        if len(plan.rows) + len(plan.errors) > limits.max_rows:
            raise BatchFileError(f"{len(plan.rows) + len(plan.errors)} rows, over the limit of {limits.max_rows} "
                                 "(REELFORGE_BATCH_MAX_ROWS)", source=csv)
        # The claim owner is the file's place, not its content: fixing a bad row and running the file again
        # gets the same names back (new versions of the same characters), while another file asking for the
        # same names gets them with suffixes.
        where = csv if csv.startswith("s3://") else str(Path(csv).expanduser().resolve())
        return plan, csv, f"csv|{where}".encode()
    if character_type is None or count is None:
        raise InputRejected("character_type, count: give a CSV (--csv FILE) or a type and a count (--character-type "
                         "kpop_idol --count 10)")
    if count > limits.max_rows:
        raise InputRejected(f"count: {count} is over REELFORGE_BATCH_MAX_ROWS={limits.max_rows}")
    try:
        plan = generate(character_type, count, seed=seed, group=group, composition=composition)
    except UnknownType as exc:
        raise InputRejected(f"character_type: {exc}") from None
    source = f"generated: {count} x {character_type}" + (f", group {group}" if group else "")
    identity = json.dumps([character_type, count, group, composition], ensure_ascii=False).encode()
    return plan, source, identity


def _default_seed() -> int:
    """A scheduled batch makes new characters each day: the seed is the run's scheduled date (YYYYMMDD)."""
    ctx = FlowRunContext.get()
    when = ctx.flow_run.expected_start_time if ctx and ctx.flow_run and ctx.flow_run.expected_start_time else None
    return int((when or dt.datetime.now(dt.UTC)).strftime("%Y%m%d"))


def _batch_id(flow_run_id: str | None) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{(flow_run_id or uuid.uuid4().hex).replace('-', '')[:8]}"


class _Batch:
    """One batch run's moving parts: the rows' outcomes, the budget, the progress, the character runs."""

    def __init__(self, engine: Engine, summary: BatchSummary, budget: Budget, progress: FlowProgress,
                 concurrency: int, character: dict[str, Any]) -> None:
        self.engine = engine
        self.summary = summary
        self.budget = budget
        self.progress = progress
        self.gate = asyncio.Semaphore(concurrency)
        self.character = character
        self.running = 0
        self.outcomes = {o.row: o for o in summary.rows}
        self.rows_by_name = {o.name: o.row for o in summary.rows if o.status == "pending"}

    def on_progress(self, snap: ProgressSnapshot) -> None:
        """A character run's progress (``<name> v<N>: stages done``) becomes the fraction of its row."""
        if snap.flow_run_id == self.progress.flow_run_id or not snap.planned:
            return
        name = snap.description.rsplit(": ", 1)[0].rsplit(" v", 1)[0]
        row = self.rows_by_name.get(name)
        if row is not None and self.outcomes[row].status == "running":
            self.progress.job_step(f"row{row}", Step(snap.fraction, node=snap.description))

    async def run_row(self, row: BatchRow) -> None:
        outcome = self.outcomes[row.row]
        async with self.gate:
            refusal = self.budget.refusal(self.running)
            if refusal is not None:
                outcome.status, outcome.error = "skipped", refusal
                self.progress.job_failed(f"row{row.row}", counted=False)
                return
            self.running += 1
            outcome.status = "running"
            try:
                await self._attempts(row, outcome)
            except asyncio.CancelledError:
                outcome.status, outcome.error = "cancelled", "the batch was cancelled"
                raise
            finally:
                self.running -= 1
                self.budget.record(outcome.gpu_seconds, outcome.cost, executed=outcome.executed > 0)
                status: str = outcome.status  # set by _attempts (mypy narrows the attribute to "running")
                if status == "completed":
                    self.progress.job_done(f"row{row.row}")
                else:
                    self.progress.job_failed(f"row{row.row}", counted=status == "failed")

    async def _attempts(self, row: BatchRow, outcome: RowOutcome) -> None:
        """Run the row's character; run it again (from cache) after an infrastructure failure, up to
        REELFORGE_BATCH_ROW_RETRIES times: a Prefect API that answered 503 under load, a crashed run, a worker or
        store that stayed away through the stage's own retries."""
        retries = self.engine.settings.batch.row_retries
        for attempt in range(1, retries + 2):
            outcome.attempts = attempt
            try:
                again = await self._character(row, outcome)
            except Exception as exc:  # one character failing never stops the others
                outcome.status, outcome.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
                again = is_infrastructure_failure(exc)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # The batch is being cancelled and Prefect turned the character's CancelledError into a Crashed
                # state: stop here (never run it again), and let the cancel go on up.
                outcome.status, outcome.error = "cancelled", "the batch was cancelled"
                raise asyncio.CancelledError
            if outcome.status == "completed":
                outcome.error = None  # an earlier attempt's failure is in the log; attempts says there was one
            if outcome.status != "failed" or not again or attempt > retries:
                return
            delay = min(60.0, ROW_RETRY_DELAY_S * 4 ** (attempt - 1))
            log.warning("row %s (%s): %s; running it again in %.0f s (attempt %s of %s)", row.row, row.name,
                        outcome.error, delay, attempt + 1, retries + 1)
            await asyncio.sleep(delay)

    def _parameters(self, row: BatchRow) -> dict[str, Any]:
        params: dict[str, Any] = {
            "name": row.name, "character_type": row.character_type if row.type_given.endswith(
                ("_female", "_male")) else row.type_given,
            "age": row.age, "gender": row.gender, "custom_prompt": row.custom_prompt, "style": row.style,
            "seed": row.seed, "voice_ref": row.voice_ref, **self.character,
        }
        if row.variations is not None:
            params["variations"] = row.variations
        return params

    async def _character(self, row: BatchRow, outcome: RowOutcome) -> bool:
        """One run of the row's character; True when it failed in a way a new run may not (infrastructure)."""
        settings = self.engine.settings.batch
        run_name = f"{self.summary.batch_id}-row{row.row}-{row.slug}"[:120]
        if outcome.attempts > 1:
            run_name = f"{run_name[:116]}-a{outcome.attempts}"
        if settings.fan_out == "deployment":
            return await self._deployed(row, outcome, run_name)
        token = JOB_PRIORITY.set(row.row)  # rows started first finish first (see WorkerPool.run)
        try:
            state: State[Any] = await character_flow.with_options(  # type: ignore[misc]
                flow_run_name=run_name, log_prints=True
            )(**self._parameters(row), return_state=True)
        finally:
            JOB_PRIORITY.reset(token)
        outcome.flow_run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
        result = await state.result(raise_on_failure=False)  # type: ignore[misc]
        if state.is_completed() and isinstance(result, CharacterResult):
            _fill(outcome, result)
            outcome.status = "completed"
            return False
        if state.is_cancelled():
            outcome.status, outcome.error = "cancelled", state.message or "cancelled"
            return False
        outcome.status = "failed"
        why = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else None
        outcome.error = (why or state.message or state.name or "failed")[:2000]
        return state.is_crashed() or is_infrastructure_failure(result if isinstance(result, BaseException) else None)

    async def _deployed(self, row: BatchRow, outcome: RowOutcome, run_name: str) -> bool:
        """The character as a run of its deployment (another machine's worker may take it); its manifest is
        read back from the store."""
        from prefect.deployments import run_deployment

        run = await run_deployment(  # type: ignore[misc]
            name=self.engine.settings.batch.character_deployment, parameters=self._parameters(row),
            flow_run_name=run_name, as_subflow=True,
        )
        outcome.flow_run_id = str(run.id)
        state = run.state
        if state is None or not state.is_completed():
            outcome.status = "cancelled" if state is not None and state.is_cancelled() else "failed"
            outcome.error = (state.message if state is not None else None) or "the character run did not complete"
            return state is not None and state.is_crashed()
        manifest = await asyncio.to_thread(read_manifest, self.engine.store, run_manifest_key(str(run.id)))
        key = character_manifest_key(row.slug, _version_of(manifest))
        character = await asyncio.to_thread(read_manifest, self.engine.store, key)
        outcome.status, outcome.slug, outcome.version = "completed", row.slug, character.version
        outcome.manifest_key = key
        outcome.gpu_seconds, outcome.cost = round(character.total_gpu_seconds, 3), round(character.total_cost, 6)
        outcome.executed = sum(1 for s in character.stages if not s.cached)
        outcome.cached = len(character.stages) - outcome.executed
        verdict = character.details.get("verdict") or {}
        outcome.score = verdict.get("score")
        return False


def _version_of(run_manifest: Any) -> int:
    keys = [o.key for s in run_manifest.stages for o in s.outputs]
    for key in keys:
        parts = key.split("/")
        if len(parts) > 2 and parts[0] == "characters" and parts[2].startswith("v") and parts[2][1:].isdigit():
            return int(parts[2][1:])
    raise ValueError("the character run's manifest names no character version")


def _fill(outcome: RowOutcome, result: CharacterResult) -> None:
    outcome.slug, outcome.version, outcome.manifest_key = result.slug, result.version, result.manifest_key
    outcome.gpu_seconds, outcome.cost = round(result.gpu_seconds, 3), round(result.cost, 6)
    outcome.executed, outcome.cached = result.executed, result.cached
    outcome.score = result.verdict.get("score") if result.verdict else None


def _outcomes(plan: BatchPlan) -> list[RowOutcome]:
    rows = [RowOutcome(row=r.row, name=r.name, slug=r.slug, role=r.role, renamed_from=r.renamed_from)
            for r in plan.rows]
    rejected: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    for error in plan.errors:
        rejected.setdefault(error.row, []).append(str(error))
        names.setdefault(error.row, error.name)
    rows += [RowOutcome(row=n, name=names[n], status="rejected", error="; ".join(msgs))
             for n, msgs in rejected.items()]
    return sorted(rows, key=lambda r: r.row)


@flow(name="reelforge-batch", log_prints=True, on_cancellation=[on_batch_cancellation],
      on_crashed=[on_batch_crashed])
async def batch_flow(
    csv: Annotated[str | None, Field(description="a batch CSV: a path or an s3:// URI")] = None,
    character_type: Annotated[str | None, Field(description="generate characters of this type")] = None,
    count: Annotated[int | None, Field(ge=1, description="how many to generate")] = None,
    group: Annotated[str | None, Field(description="a group name: the generated characters are its members")] = None,
    composition: Annotated[Composition | None, Field(description="the group's genders")] = None,
    seed: Annotated[int | None, Field(ge=0, le=2**31 - 1,
                                      description="the batch seed (default: 0 for a CSV, else the run's date)")]
    = None,
    variations: Annotated[int, Field(ge=1, le=500, description="variations per character (a CSV column wins)")] = 4,
    lora: Annotated[bool, Field(description="train and test an identity LoRA per character")] = True,
    intro: Annotated[bool, Field(description="an intro clip per character")] = True,
    width: Annotated[int, Field(ge=64, le=4096, multiple_of=8)] = 1024,
    height: Annotated[int, Field(ge=64, le=4096, multiple_of=8)] = 1024,
    max_cost: Annotated[float | None, Field(ge=0, description="start no character that would pass this cost")]
    = None,
    max_gpu_hours: Annotated[float | None, Field(ge=0, description="start no character that would pass this")]
    = None,
    concurrency: Annotated[int | None, Field(ge=1, le=1000, description="characters at once "
                                             "(default REELFORGE_BATCH_CONCURRENCY)")] = None,
) -> BatchResult | State[Any]:
    """Make a batch of characters from a CSV or a type and a count; Failed if any row was not made.

    Every character is its own flow run; the summary goes to ``batches/<batch id>/summary.json`` in the store.
    """
    started = time.monotonic()
    settings = Settings.load()
    if variations > settings.character.max_variations:
        raise InputRejected(f"variations: {variations} is above REELFORGE_MAX_VARIATIONS="
                         f"{settings.character.max_variations}")
    # A scheduled generated batch makes new characters each day; a CSV names its characters, so its seed stays.
    seed = (0 if csv is not None else _default_seed()) if seed is None else seed
    # Everything about the input is checked here, before a worker is asked for anything.
    plan, source, identity = _plan(settings, csv=csv, character_type=character_type, count=count, group=group,
                                   composition=composition, seed=seed)
    flow_run_id = current_flow_run_id()
    batch_id = _batch_id(flow_run_id)
    owner = sha256_bytes(identity + f"|seed={seed}".encode())[:16]
    budget = Budget(max_cost=max_cost, max_gpu_hours=max_gpu_hours, estimate_gpu_s=settings.batch.estimate_gpu_s,
                    price_per_hour=settings.limits.price_per_hour())
    character = {"variations": variations, "lora": lora, "intro": intro, "width": width, "height": height}
    async with open_engine(settings) as engine, cancel_scope(engine.pool):
        store = engine.store
        plan = await asyncio.to_thread(resolve_names, plan, NameClaims(store, owner, batch_id=batch_id))
        summary = BatchSummary(batch_id=batch_id, source=source, seed=seed, group=plan.group, flow_run_id=flow_run_id,
                               budget={"max_cost": max_cost, "max_gpu_hours": max_gpu_hours},
                               rows=_outcomes(plan))
        await asyncio.to_thread(store.put_json, {"plan": plan.model_dump(mode="json"), "owner": owner},
                                batch_key(batch_id, "plan.json"))
        for error in plan.errors:
            print(f"{source}: {error}")
        progress = FlowProgress(description=f"batch {batch_id}: characters done")
        await progress.start()
        progress.plan(len(plan.rows))
        batch = _Batch(engine, summary, budget, progress, concurrency or settings.batch.concurrency, character)
        remove = add_listener(batch.on_progress)
        state = "completed"
        try:
            with share_engine(engine):
                tasks = [asyncio.create_task(batch.run_row(row)) for row in plan.rows]
                await _children(batch, tasks)
        except BaseException:
            state = "cancelled"
            raise
        finally:
            remove()
            await progress.close()
            for outcome in summary.rows:
                if outcome.status in ("pending", "running"):
                    outcome.status, outcome.error = "cancelled", "the batch was cancelled"
            summary.state = "completed" if state == "completed" and summary.succeeded else (
                "cancelled" if state == "cancelled" else "failed")
            summary.tally(time.monotonic() - started)
            with contextlib.suppress(Exception) if state == "cancelled" else contextlib.nullcontext():
                ref, members = await _write_records(store, summary, plan)
        await acreate_table_artifact(
            table=[o.model_dump(mode="json", exclude={"flow_run_id"}) for o in summary.rows],
            key=f"batch-{safe_slug(batch_id)}", description=_totals_line(summary),
        )
    batch_finished(batch_id, ref, ok=summary.succeeded, totals=summary.totals.model_dump())
    print(_totals_line(summary))
    print(f"summary: {ref.uri}")
    result = BatchResult(batch_id=batch_id, summary_key=ref.key, summary_uri=ref.uri, group_key=members,
                         summary=summary)
    if summary.succeeded:
        return Completed(message=_totals_line(summary), data=result)
    return Failed(message=f"{_totals_line(summary)}; summary {ref.uri}", data=result)


async def _children(batch: _Batch, tasks: list[asyncio.Task[None]]) -> None:
    """Wait for every row; on cancellation of the batch, cancel the rows still going and wait for their
    cleanup (each character's cancel scope removes its prompts)."""
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _write_records(store: Any, summary: BatchSummary, plan: BatchPlan) -> tuple[ArtifactRef, str | None]:
    ref = await asyncio.to_thread(store.put_json, summary.model_dump(mode="json"),
                                  batch_key(summary.batch_id, "summary.json"))
    if plan.group is None:
        return ref, None
    by_row = {o.row: o for o in summary.rows}
    record = {
        "group": plan.group, "batch_id": summary.batch_id, "summary_key": ref.key,
        "members": [{"row": r.row, "name": r.name, "slug": r.slug, "role": r.role, "age": r.age, "gender": r.gender,
                     "status": by_row[r.row].status, "manifest_key": by_row[r.row].manifest_key}
                    for r in plan.rows],
    }
    key = group_key(safe_slug(plan.group), safe_slug(summary.batch_id))
    await asyncio.to_thread(store.put_json, record, key)
    return ref, key


def _totals_line(summary: BatchSummary) -> str:
    t = summary.totals
    parts = [f"{t.completed}/{t.rows} made"]
    for name in ("failed", "rejected", "skipped", "cancelled"):
        if getattr(t, name):
            parts.append(f"{getattr(t, name)} {name}")
    return f"batch {summary.batch_id}: " + ", ".join(parts) + f"; {t.gpu_seconds:.1f} GPU s, cost {t.cost:.4f}"


def print_batch_summary(result: BatchResult, console: Console) -> None:
    """The rows as a table, then the totals and where the summary is."""
    rows = result.summary.rows
    roles, scores, errors = (any(o.role for o in rows), any(o.score is not None for o in rows),
                             any(o.error for o in rows))
    table = Table(title=f"batch {result.batch_id}", title_justify="left")
    columns = ["row", "name", *(["role"] if roles else []), "status", "version", "GPU s", "cost",
               *(["score"] if scores else []), *(["error"] if errors else [])]
    for column in columns:
        table.add_column(column, overflow="fold")
    for o in rows:
        name = o.name + (f" (asked: {o.renamed_from})" if o.renamed_from else "")
        cells = [str(o.row), escape(name), *([o.role or ""] if roles else []), o.status,
                 f"v{o.version}" if o.version else "", f"{o.gpu_seconds:.1f}", f"{o.cost:.4f}",
                 *([f"{o.score:.3f}" if o.score is not None else ""] if scores else []),
                 *([escape(o.error or "")] if errors else [])]
        table.add_row(*cells)
    console.print(table)
    # soft_wrap: a long URI stays on one line, whole, for a person to copy and a script to read.
    console.print(escape(_totals_line(result.summary)), highlight=False, soft_wrap=True)
    console.print(f"summary: {escape(result.summary_uri)}", highlight=False, soft_wrap=True)
    if result.group_key:
        console.print(f"group record: {escape(result.group_key)}", highlight=False, soft_wrap=True)
