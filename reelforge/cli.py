"""The ``reelforge`` command line (typer)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from reelforge.settings import Settings

if TYPE_CHECKING:
    from reelforge.storage import ArtifactStore

app = typer.Typer(help="reelforge: generative media production on ComfyUI workers.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
templates_app = typer.Typer(help="Workflow templates (workflows/NAME.json + NAME.manifest.yaml).", no_args_is_help=True)
app.add_typer(templates_app, name="templates")
lora_app = typer.Typer(help="Stored LoRA versions (loras/<character>/v<N>/ in REELFORGE_STORE).", no_args_is_help=True)
app.add_typer(lora_app, name="lora")
characters_app = typer.Typer(help="Stored characters (characters/<slug>/v<N>/ in REELFORGE_STORE).",
                             no_args_is_help=True)
app.add_typer(characters_app, name="characters")
productions_app = typer.Typer(help="Stored productions (productions/<slug>/ in REELFORGE_STORE).",
                              no_args_is_help=True)
app.add_typer(productions_app, name="productions")


@app.command("preview-worker")
def preview_worker(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind (0 = a free one).")] = 8188,
    latency: Annotated[str, typer.Option(help="instant | gpu | gpu:SCALE | fixed:SECONDS")] = "instant",
    faults: Annotated[str | None, typer.Option(help="Fault spec, e.g. 'http500=0.1,slow_view=1.5'.")] = None,
    root: Annotated[Path | None, typer.Option(help="Folder for input/output/temp/models.")] = None,
) -> None:
    """Start a preview worker: a ComfyUI-protocol server that renders placeholders on CPU. Exit 2 on a bad option."""
    from reelforge.preview.server import OptionError, check_options, serve_forever

    try:
        serve_forever(check_options(host=host, port=port, latency=latency, faults=faults, root=root))
    except OptionError as exc:
        _fail(str(exc))


def _fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit: 2 means the command could not do its check at all."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _check_folder(folder: Path | None) -> None:
    if folder is not None and not folder.is_dir():
        _fail(f"--folder {folder} is not a directory")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings (secrets masked)."""
    try:
        settings = Settings.load()
    except ValidationError as exc:
        typer.echo(f"invalid settings:\n{exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(json.loads(settings.model_dump_json()), indent=2))


@templates_app.command("list")
def templates_list(
    folder: Annotated[Path | None, typer.Option(help="Templates folder (default: workflows/).")] = None,
) -> None:
    """List the templates: name, kind, version, number of parameters. Exit 1 if any fails to load."""
    from reelforge.templates.errors import TemplateError
    from reelforge.templates.template import load_template, template_names

    _check_folder(folder)
    failed = False
    for name in template_names(folder):
        try:
            template = load_template(name, folder=folder)
        except TemplateError as exc:
            failed = True
            typer.echo(f"{name:<32} FAILED TO LOAD ({_plural(len(exc.problems), 'problem')})")
            typer.echo(str(exc), err=True)
            continue
        typer.echo(f"{template.name:<32} {template.kind:<8} {template.version[:12]}  {len(template.parameters)} params")
    if failed:
        raise typer.Exit(1)


@templates_app.command("validate")
def templates_validate(
    names: Annotated[list[str] | None, typer.Argument(help="Template names (default: all).")] = None,
    worker: Annotated[
        str | None, typer.Option(help="Validate against this live worker's /object_info and /models.")
    ] = None,
    folder: Annotated[Path | None, typer.Option(help="Templates folder (default: workflows/).")] = None,
    lock: Annotated[
        Path | None, typer.Option(help="Lock file for offline validation (default: deployments/comfyui/lock.yaml).")
    ] = None,
) -> None:
    """Validate templates offline (catalogue + lock model list) or against a live worker.

    Exit 1 when templates fail, 2 when they could not be checked (worker unreachable, lock unreadable).
    """
    import asyncio

    from reelforge.templates.errors import Problem, TemplateError
    from reelforge.templates.lock import LockError, default_lock, load_lock
    from reelforge.templates.template import (
        Template,
        check_against_lock,
        load_template,
        template_names,
        validate_on_worker,
    )

    _check_folder(folder)
    chosen = list(names or template_names(folder))
    problems: list[Problem] = []
    loaded: list[Template] = []
    for name in chosen:
        try:
            loaded.append(load_template(name, folder=folder))
        except TemplateError as exc:
            problems += exc.problems

    if worker is None:
        from reelforge.templates.catalogue import offline_catalogue

        try:
            comfy_lock = load_lock(lock) if lock is not None else default_lock()
        except LockError as exc:
            _fail(str(exc))
        object_info = offline_catalogue().object_info()
        models = comfy_lock.models_by_folder()
        for template in loaded:
            problems += check_against_lock(template, comfy_lock)
            try:
                template.validate(object_info, models)
            except TemplateError as exc:
                problems += exc.problems
    else:
        from reelforge.comfy.client import ComfyClient
        from reelforge.comfy.errors import ComfyError

        async def check_live(client: ComfyClient) -> list[Problem]:
            found: list[Problem] = []
            async with client:
                for template in loaded:
                    try:
                        await validate_on_worker(template, client)
                    except TemplateError as exc:
                        found += exc.problems
            return found

        try:
            client = ComfyClient(worker, use_websocket=False)
        except ValueError as exc:
            _fail(f"--worker {worker!r}: {exc}")
        try:
            problems += asyncio.run(check_live(client))
        except ComfyError as exc:
            for problem in problems:  # the load failures found before still count
                typer.echo(str(problem))
            _fail(f"worker {client.url} {worker_failure(exc)}")

    where = worker or "offline catalogue + lock"
    bad = sorted({p.template for p in problems})
    for template in loaded:
        if template.name not in bad:
            typer.echo(f"ok      {template.name} ({template.version[:12]}) against {where}")
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        typer.echo(f"{len(bad)} of {len(chosen)} templates failed ({_plural(len(problems), 'problem')})", err=True)
        raise typer.Exit(1)


@templates_app.command("init")
def templates_init(
    file: Annotated[Path, typer.Argument(help="An API-format or UI-format workflow JSON, or a PNG/WebP/audio/video "
                                              "file ComfyUI saved (its embedded prompt).")],
    name: Annotated[str, typer.Option("--name", help="Template name: the file stem of NAME.json and its manifest.")],
    folder: Annotated[Path | None, typer.Option(help="Templates folder (default: workflows/).")] = None,
    lock: Annotated[
        Path | None, typer.Option(help="Lock file to add missing model files and packs to "
                                       "(default: deployments/comfyui/lock.yaml).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a template of that name.")] = False,
) -> None:
    """Make a template from a ComfyUI export: the graph as given, a manifest inferred beside it, the lock extended.

    Exit 2 with one line per problem (each naming the file and the node) when nothing could be written.
    """
    from reelforge.templates.errors import InitRefused
    from reelforge.templates.scaffold import init_template

    try:
        result = init_template(file, name, folder=folder, lock_path=lock, force=force)
    except InitRefused as exc:
        for line in str(exc).splitlines():
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from exc
    template = result.template
    typer.echo(f"graph     {result.graph_path} (from {result.source})")
    typer.echo(f"manifest  {result.manifest_path}: kind {template.kind}, version {template.version[:12]}")
    for param in template.manifest.parameters:
        where = ", ".join(f"{t.node}.{t.input}" for t in param.all_targets)
        default = "required" if param.required else f"default {param.default!r}"
        typer.echo(f"  param   {param.name:<22} {param.type:<7} {where} ({default})")
    for output in template.outputs:
        typer.echo(f"  output  {output.title} ({output.kind})")
    for model in template.models:
        typer.echo(f"  model   {model}")
    for custom in template.custom_nodes:
        typer.echo(f"  custom  {custom.class_} (pack {custom.pack})")
    if result.added_models or result.added_packs:
        added = [str(m) for m in result.added_models] + [f"pack {p}" for p in result.added_packs]
        unknown = "url, size and sha256 unknown: fill them in"
        typer.echo(f"lock      {result.lock_path}: added {', '.join(added)} ({unknown})")
    for note in result.notes:
        typer.echo(f"note      {note}")
    check = "validated offline (catalogue + lock)" if result.validated else "not validated offline"
    typer.echo(f"{check}; next: adjust the manifest, `reelforge templates validate {template.name}`, "
               f"`reelforge run template {template.name}`")


def worker_failure(exc: BaseException) -> str:
    """Why a worker could not be asked, in words: ``unreachable: connection refused``, ``timed out: ...``."""
    from reelforge.comfy.errors import ComfyError, WorkerTimeout, WorkerUnavailable

    what = exc.message if isinstance(exc, ComfyError) else str(exc)
    if isinstance(exc, WorkerTimeout):
        return f"timed out: {what}"
    if isinstance(exc, WorkerUnavailable):
        cause: BaseException | None = exc
        while cause is not None:  # httpx wraps the socket's own error; its errno says it best
            if isinstance(cause, OSError) and cause.errno:
                # asyncio's strerror is "Connect call failed (...)"; resolver errnos are negative, not for strerror
                reason = os.strerror(cause.errno) if cause.errno > 0 else str(cause.strerror)
                return f"unreachable: {reason.lower()}"
            cause = cause.__cause__ or cause.__context__
        return f"unreachable: {what}"
    return f"could not be checked: {what}"


# -- lora: the store's LoRA records ------------------------------------------------------------------------


def _lora_store() -> tuple[ArtifactStore, str]:
    """The store of ``REELFORGE_STORE`` and its name; bad settings or an unusable store: one line, exit 2."""
    from reelforge.storage import StoreError, open_store

    try:
        settings = Settings.load()
    except ValidationError as exc:
        _fail(f"invalid settings: {exc.errors()[0]['msg']}")
    try:
        return open_store(settings.store), settings.store.store
    except StoreError as exc:
        _fail(str(exc))


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # not reached


@lora_app.command("list")
def lora_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array of the full records on stdout.")] = False,
) -> None:
    """List every stored LoRA version: character, version, family, rank, size, sha256, verdict."""
    from reelforge.lora import LoraError, list_loras
    from reelforge.storage import StoreError

    store, where = _lora_store()
    try:
        records = list_loras(store)
    except (LoraError, StoreError) as exc:
        _fail(str(exc).splitlines()[0], 1)
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2, ensure_ascii=False))
        return
    if not records:
        typer.echo(f"no LoRAs stored in {where}")
        return
    rows = [
        (
            r.character,
            f"v{r.version}",
            r.family,
            str(r.validation.rank) if r.validation.rank is not None else "/".join(map(str, r.validation.ranks)) or "-",
            _size(r.size),
            r.sha256[:12],
            r.verdict or "-",
        )
        for r in records
    ]
    _table(("CHARACTER", "VERSION", "FAMILY", "RANK", "SIZE", "SHA256", "VERDICT"), rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Aligned columns on stdout, the header first."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@lora_app.command("show")
def lora_show(
    name: Annotated[str, typer.Argument(help="Character name or slug (e.g. 'Mina Park' or mina-park).")],
    version: Annotated[int | None, typer.Option(min=1, help="Version (default: the latest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The full record as one JSON object on stdout.")] = False,
) -> None:
    """Show everything on one stored LoRA record. Exit 1 when the character has no such LoRA."""
    from reelforge.characters import character_slug
    from reelforge.lora import LoraError, LoraNotFound, read_lora
    from reelforge.storage import StoreError, UnsafeKey

    store, _ = _lora_store()
    try:
        slug = character_slug(name)
        record = read_lora(store, slug, version)
    except (LoraNotFound, UnsafeKey, ValueError):
        what = f"v{version} of " if version is not None else ""
        _fail(f"no LoRA {what}{name!r} stored", 1)
    except (LoraError, StoreError) as exc:
        _fail(str(exc).splitlines()[0], 1)
    data = record.model_dump(mode="json")
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    report = data.pop("validation")
    training = data.pop("training")
    for key, value in data.items():
        typer.echo(f"{key + ':':<20} {_shown(value)}")
    typer.echo("training:")
    for key, value in training.items():
        typer.echo(f"  {key + ':':<18} {_shown(value)}")
    typer.echo("validation:")
    for key, value in report.items():
        typer.echo(f"  {key + ':':<18} {_shown(value)}")


# -- workers: what every configured worker holds -------------------------------------------------------------


@app.command("workers")
def workers(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array of the reports on stdout.")] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0.1, help="Seconds per request (default REELFORGE_REQUEST_TIMEOUT_S).")
    ] = None,
    files: Annotated[bool, typer.Option("--files", help="List every model file, not only counts.")] = False,
) -> None:
    """Every worker of REELFORGE_COMFY_URLS: health, labels, node classes, models, the model its latest prompt
    loaded, queue depth, our prompts and their flow runs. Unreachable workers are listed with the reason; exit 0
    (2 on bad settings)."""
    import asyncio

    from reelforge.inventory import inspect_workers
    from reelforge.settings import WorkerSettings

    try:
        settings = WorkerSettings()
    except ValidationError as exc:
        _fail(f"invalid settings: {exc.errors()[0]['msg']}")
    if settings.embedded:
        if as_json:
            typer.echo("[]")
        else:
            typer.echo("no workers configured (REELFORGE_COMFY_URLS is empty): each run starts "
                       f"{settings.preview_workers} embedded preview workers of its own")
        return
    reports = asyncio.run(inspect_workers(settings, reason=worker_failure, timeout_s=timeout))
    if as_json:
        data = [r.model_dump(mode="json", exclude=set() if files else {"model_files"}) | {"queue_depth": r.queue_depth}
                for r in reports]
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for report in reports:
        labels = "+".join(report.labels) or "any"
        if not report.healthy:
            typer.echo(f"{report.url}  [{labels}]  DOWN: {report.error}")
            continue
        version = f"ComfyUI {report.comfyui_version}" if report.comfyui_version else "ComfyUI"
        devices = f" on {', '.join(report.devices)}" if report.devices else ""
        typer.echo(f"{report.url}  [{labels}]  healthy, {version}{devices}")
        typer.echo(f"  node classes  {report.node_classes if report.node_classes is not None else '?'}")
        models = ", ".join(f"{folder} {count}" for folder, count in sorted(report.models.items())) or "none"
        typer.echo(f"  models        {models}")
        if files:
            for folder, names in sorted(report.model_files.items()):
                for name in names:
                    typer.echo(f"    {folder}/{name}")
        typer.echo(f"  last loaded   {', '.join(report.last_loaded) or '- (no prompt in its history)'}")
        depth = "?" if report.queue_depth is None else f"{report.running} running, {report.pending} pending"
        typer.echo(f"  queue         {depth}; ours: {len(report.ours)}")
        for ours in report.ours:
            typer.echo(f"    {ours.state:<8} {ours.prompt_id}  job {ours.job_id}  flow run {ours.flow_run_id or '-'}")
        for problem in report.problems:
            typer.echo(f"  problem       {problem}")
    down = [r for r in reports if not r.healthy]
    typer.echo(f"{len(reports) - len(down)} of {len(reports)} workers healthy", err=True)


# -- characters: the store's character versions --------------------------------------------------------------


def _stored_entries(read: Callable[[Any], list[Any]], noun: str, as_json: bool) -> list[Any]:
    """What ``read(store)`` lists; printed as JSON (then exit 0), or a line when there is nothing (exit 0)."""
    from reelforge.storage import StoreError

    store, where = _lora_store()
    try:
        entries = read(store)
    except StoreError as exc:
        _fail(str(exc).splitlines()[0], 1)
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2, ensure_ascii=False))
        raise typer.Exit(0)
    if not entries:
        typer.echo(f"no {noun} stored in {where}")
        raise typer.Exit(0)
    return entries


def _version_states(versions: list[Any]) -> str:
    """``v1,v2(reserved)``: every version, its state when not complete."""
    return ",".join(f"v{v.version}" + ("" if v.state == "complete" else f"({v.state})") for v in versions)


@characters_app.command("list")
def characters_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """Every stored character: slug, name, versions, the latest complete one, its LoRA verdict and manifest URI."""
    from reelforge.inventory import list_characters

    entries = _stored_entries(list_characters, "characters", as_json)
    rows = []
    for entry in entries:
        latest = entry.latest
        states = _version_states(entry.versions)
        verdict = "-" if latest is None or latest.verdict is None else f"{latest.verdict} {latest.score}"
        rows.append((entry.slug, entry.name or "-", states or "-", f"v{latest.version}" if latest else "-", verdict,
                     (latest.manifest_uri or "-") if latest else "-"))
    _table(("SLUG", "NAME", "VERSIONS", "LATEST", "LORA VERDICT", "MANIFEST"), rows)


@characters_app.command("show")
def characters_show(
    name: Annotated[str, typer.Argument(help="Character name or slug (e.g. 'Mina Park' or mina-park-...).")],
    as_json: Annotated[bool, typer.Option("--json", help="The character as one JSON object on stdout.")] = False,
) -> None:
    """Every version of one character: state, LoRA and verdict, voice, intro, GPU seconds, cost, artifacts and
    URIs. Exit 2 with the nearest stored names when there is no such character."""
    from reelforge.inventory import CharacterNotFound, find_character
    from reelforge.storage import StoreError

    store, _ = _lora_store()
    try:
        entry = find_character(store, name)
    except CharacterNotFound as exc:
        _fail(str(exc))
    except StoreError as exc:
        _fail(str(exc).splitlines()[0], 1)
    if as_json:
        typer.echo(json.dumps(entry.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    typer.echo(f"{entry.name or entry.slug} ({entry.slug})")
    for version in entry.versions:
        if version.state != "complete":
            typer.echo(f"v{version.version}  {version.state}")
            continue
        if version.error:
            typer.echo(f"v{version.version}  manifest unreadable: {version.error}")
            continue
        verdict = "no LoRA" if version.verdict is None else f"LoRA {version.verdict} (score {version.score})"
        typer.echo(f"v{version.version}  {version.created_at}  {verdict}  GPU {version.gpu_seconds} s  "
                   f"cost {version.cost}")
        typer.echo(f"  manifest  {version.manifest_uri}")
        if version.lora:
            typer.echo(f"  lora      {version.lora.get('file_key')} (v{version.lora.get('version')}, "
                       f"{version.lora.get('family')}, rank {version.lora.get('rank')})")
        for what, item in (("voice", version.voice), ("intro", version.intro)):
            if item:
                typer.echo(f"  {what:<9} {item['uri']}")
        for artifact in version.artifacts:
            typer.echo(f"  {artifact['stage']:<28} {artifact['uri']}")


def _shown(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False) if value else "-"
    return str(value)


# -- productions: the store's videos ------------------------------------------------------------------------


@productions_app.command("list")
def productions_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """Every stored production: slug, title, versions, the latest complete one and its video URI."""
    from reelforge.inventory import list_productions

    entries = _stored_entries(list_productions, "productions", as_json)
    rows = []
    for entry in entries:
        latest = entry.latest
        states = _version_states(entry.versions)
        rows.append((entry.slug, entry.title or "-", states or "-", f"v{latest.version}" if latest else "-",
                     (latest.video_uri or "-") if latest else "-"))
    _table(("SLUG", "TITLE", "VERSIONS", "LATEST", "VIDEO"), rows)


@productions_app.command("show")
def productions_show(
    name: Annotated[str, typer.Argument(help="Production slug or title.")],
    as_json: Annotated[bool, typer.Option("--json", help="The production as one JSON object on stdout.")] = False,
) -> None:
    """Every version of one production: video, script, cast, the takes it uses, GPU seconds, cost. Exit 2 with
    the nearest stored names when there is no such production."""
    from reelforge.inventory import ProductionNotFound, find_production
    from reelforge.storage import StoreError

    store, _ = _lora_store()
    try:
        entry = find_production(store, name)
    except ProductionNotFound as exc:
        _fail(str(exc))
    except StoreError as exc:
        _fail(str(exc).splitlines()[0], 1)
    if as_json:
        typer.echo(json.dumps(entry.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    typer.echo(f"{entry.title or entry.slug} ({entry.slug})")
    for version in entry.versions:
        if version.state != "complete" or version.error:
            typer.echo(f"v{version.version}  {version.error or version.state}")
            continue
        cast = ", ".join(f"{n} ({c.get('slug')} v{c.get('version')})" for n, c in version.cast.items()) or "none"
        typer.echo(f"v{version.version}  {version.created_at}  GPU {version.gpu_seconds} s  cost {version.cost}  "
                   f"cast: {cast}")
        typer.echo(f"  video     {version.video_uri}")
        typer.echo(f"  manifest  {version.manifest_uri}")
        typer.echo(f"  script    {version.script_key}")
        for take in version.takes:
            typer.echo(f"  take      scene {take.get('scene')} shot {take.get('shot')} take {take.get('take')}  "
                       f"{take.get('place', '')}")


if __name__ == "__main__":
    app()
