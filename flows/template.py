"""Template flow: one workflow template run on the fleet as a cached stage, the way a person tries a new workflow.

    --set / --input checked against the manifest -> input files stored (content keys)
    -> the template validated on the healthy workers -> ``Stage.gpu(name)`` (cached by content like every stage)
    -> outputs stored with lineage under ``templates/<name>/outputs/`` -> a run manifest

``reelforge run template NAME [--folder DIR] [--set PARAM=VALUE ...] [--input PARAM=FILE ...] [--json]``. The
same parameters and input files again serve the stage from the cache (``0 executed, 1 cached``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from prefect import flow
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from reelforge.engine import open_engine
from reelforge.errors import InputRejected
from reelforge.hashing import sha256_file
from reelforge.jobs import validate_on_pool
from reelforge.settings import Settings
from reelforge.storage import (
    ArtifactRef,
    Manifest,
    content_key,
    run_manifest_key,
    safe_slug,
    template_prefix,
    write_manifest,
)
from reelforge.templates import Template, TemplateError, load_template, parse_assignments
from tasks.artifacts import job_rows, publish_summary
from tasks.cancellation import cancel_scope, on_cancellation, on_crashed
from tasks.context import current_flow_run_id
from tasks.progress import FlowProgress
from tasks.stage import Stage, StageRunner

__all__ = ["TemplateRunResult", "print_template_summary", "template_flow"]


class TemplateOutputRef(BaseModel):
    """One stored output: the node that made it (title and id), its kind, where it is."""

    node: str | None
    node_id: str | None
    kind: str
    key: str
    uri: str
    sha256: str
    size: int


class TemplateRunResult(BaseModel):
    template: str
    version: str
    kind: str
    params: dict[str, Any]
    inputs: dict[str, ArtifactRef]
    outputs: list[TemplateOutputRef]
    jobs: list[dict[str, Any]]
    executed: int
    cached: int
    gpu_seconds: float
    cost: float
    manifest_key: str | None = None
    manifest_uri: str | None = None
    flow_run_id: str | None = None


def _template(name: str, folder: str | None) -> Template:
    if folder is not None and not Path(folder).is_dir():
        raise InputRejected(f"--folder {folder}: not a directory")
    try:
        return load_template(name, folder=Path(folder) if folder else None)
    except TemplateError as exc:
        raise InputRejected(f"template {name!r} cannot be loaded: {exc}") from exc


@flow(name="reelforge-template", log_prints=True, on_cancellation=[on_cancellation], on_crashed=[on_crashed])
async def template_flow(
    name: Annotated[str, Field(description="template name (workflows/NAME.json + NAME.manifest.yaml)")],
    folder: Annotated[str | None, Field(description="templates folder (default: workflows/)")] = None,
    set_values: Annotated[list[str], Field(description="PARAM=VALUE, once per parameter")] = [],  # noqa: B006
    inputs: Annotated[list[str], Field(description="PARAM=FILE for image/audio/video parameters")] = [],  # noqa: B006
) -> TemplateRunResult:
    """Run one workflow template on the fleet as a cached stage and store its outputs with lineage."""
    template = _template(name, folder)
    params, files = parse_assignments(template, set_values, inputs)
    stage = Stage.gpu(template.name, folder)
    flow_run_id = current_flow_run_id()
    async with open_engine(Settings.load()) as engine, cancel_scope(engine.pool, shared=engine.borrowed):
        store = engine.store
        progress = FlowProgress(description=f"{template.name}: stages done")
        await progress.start()
        try:
            stored: dict[str, ArtifactRef] = {}
            for param_name, path in files.items():
                sha, _ = await asyncio.to_thread(sha256_file, path)
                key = content_key(template_prefix(template.name, "inputs"), sha, path.suffix)
                stored[param_name] = await asyncio.to_thread(store.put_file, path, key)
            # Fail before any GPU time is spent if the template does not fit the workers.
            await validate_on_pool(engine.pool, [template],
                                   {template.name: {**params, **{n: p.name for n, p in files.items()}}})
            stages = await StageRunner.create(engine, progress=progress)
            progress.plan(1)
            record = await stages.run(stage, params, place=template_prefix(template.name, "outputs"),
                                      job_id=f"{template.name}-{template.version[:8]}", inputs=stored)
        finally:
            await progress.close()
        records = [record]
        manifest = Manifest(subject=flow_run_id or template.name, kind="run", name=template.name, stages=records,
                            details={"template": template.name, "version": template.version, "folder": folder})
        manifest_ref = None
        if flow_run_id:
            manifest_ref = await asyncio.to_thread(write_manifest, store, manifest, run_manifest_key(flow_run_id))
        await publish_summary(records, store, key=f"template-{safe_slug(template.name)}", title=template.name)
    titles = {o.node_id: o.title for o in template.outputs}
    outputs = [
        TemplateOutputRef(node=titles.get(o.node_id or "") or template.title_of(o.node_id or ""), node_id=o.node_id,
                          kind=o.kind, key=o.key, uri=o.uri, sha256=o.sha256, size=o.size)
        for o in record.outputs
    ]
    print(f"{template.name}: {len(outputs)} output(s), {stages.executed} executed, {stages.cached} cached")
    return TemplateRunResult(
        template=template.name, version=template.version, kind=template.kind, params=params, inputs=stored,
        outputs=outputs, jobs=job_rows(records), executed=stages.executed, cached=stages.cached,
        gpu_seconds=manifest.total_gpu_seconds, cost=manifest.total_cost,
        manifest_key=manifest_ref.key if manifest_ref else None,
        manifest_uri=manifest_ref.uri if manifest_ref else None,
        flow_run_id=flow_run_id,
    )


def print_template_summary(result: TemplateRunResult, console: Console) -> None:
    """What ``reelforge run template`` prints: one row per output, then where the lineage is."""
    table = Table(title=f"{result.template} ({result.kind}, {result.version[:12]})", title_justify="left")
    for column in ("node", "kind", "size", "output"):
        table.add_column(column, overflow="fold")
    for output in result.outputs:
        table.add_row(f"{output.node or '-'} (#{output.node_id})", output.kind, str(output.size), output.uri)
    console.print(table)
    status = "cached" if result.cached else "executed"
    console.print(f"1 stage: {status}; {result.gpu_seconds:.2f} GPU-seconds, cost {result.cost:.4f} in this run")
    if result.manifest_uri:
        console.print(f"manifest: {result.manifest_uri}", soft_wrap=True)
