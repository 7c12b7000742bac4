"""``reelforge run <flow>``: run a flow in this process, with a live display, a summary and an exit code.

The ``reelforge`` entry point is the engine's command line (``reelforge.cli``, which never imports Prefect)
plus the ``run`` commands registered here, in the orchestration layer. Each flow is registered once with
``register`` (flow, summary renderer); its options are generated from the flow's typed parameters, so a new
parameter is a new option with the same bounds, and ``--spec FILE`` (JSON or YAML) gives them all at once
(options given on the command line win).

* Progress (stages done out of planned, the running stage's node and step, fed by ComfyUI's progress events)
  is drawn on stderr; the summary table follows on stdout.
* ``--json``: one JSON object on stdout (flow run id, final state, manifest URI, executed and cached stages by
  kind, the flow's result); progress, logs and the table go to stderr.
* Exit codes: 0 the flow completed; 1 it failed; 2 bad input (a parameter, the spec file, a file the flow
  checks before any work such as a batch CSV: ``InputRejected``), nothing was run;
  130 interrupted (Ctrl-C), 143 terminated (SIGTERM): the run's prompts are removed from every worker before the
  command exits (within seconds: the clean-up is bounded).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import typer
import yaml
from prefect import Flow
from prefect.client.schemas.objects import State
from prefect.exceptions import TerminationSignal
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from reelforge.cli import app
from reelforge.errors import InputRejected
from tasks.progress import ProgressSnapshot, add_listener

__all__ = ["app", "main", "register", "run_app"]

run_app = typer.Typer(help="Run a flow here (ephemeral Prefect unless PREFECT_API_URL is set).", no_args_is_help=True)
app.add_typer(run_app, name="run")

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143

Summary = Callable[[Any, Console], None]


@dataclass(frozen=True)
class FlowCommand:
    name: str
    flow: Flow[..., Any]
    summary: Summary
    params: type[BaseModel]


def _parameters(flow: Flow[..., Any]) -> type[BaseModel]:
    """A pydantic model of the flow's parameters (types, defaults and Field bounds, as the flow declares them)."""
    fields: dict[str, Any] = {}
    hints = get_type_hints(flow.fn, include_extras=True)  # resolves `from __future__ import annotations`
    for name, param in inspect.signature(flow.fn).parameters.items():
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (hints.get(name, Any), default)
    config = ConfigDict(extra="forbid")
    model: type[BaseModel] = create_model(f"{flow.fn.__name__}_parameters", __config__=config, **fields)
    return model


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _load_spec(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--spec {path}: cannot read it ({type(exc).__name__}: {exc})") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        what = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise BadInput(f"--spec {path}: not valid {what}: {exc}") from exc
    if not isinstance(data, dict):
        raise BadInput(f"--spec {path}: expected a mapping of parameter names to values, got {type(data).__name__}")
    return data


class BadInput(Exception):
    """A parameter or the spec file is wrong; the message names which and why."""


def _validated(command: FlowCommand, values: Mapping[str, Any], source: Mapping[str, str]) -> dict[str, Any]:
    try:
        model = command.params.model_validate(dict(values))
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            where = source.get(field, _option(field))
            got = f" (got {error['input']!r})" if error["type"] != "missing" and "input" in error else ""
            lines.append(f"{where}: {error['msg']}{got}")
        raise BadInput("; ".join(lines)) from exc
    return model.model_dump()


def register(
    name: str, flow: Flow[..., Any], summary: Summary, *, aliases: Mapping[str, str] | None = None,
    arguments: Sequence[str] = (), preflight: Callable[[Mapping[str, Any]], None] | None = None,
) -> FlowCommand:
    """Add ``reelforge run <name>`` with one option per flow parameter, ``--spec`` and ``--json``.

    ``aliases``: a shorter option for a parameter (``{"character_type": "--type"}``), accepted beside its own.
    ``arguments``: parameters given positionally (``reelforge run template NAME``). A ``list[str]`` parameter is an
    option given once per item (``--set a=1 --set b=2``). ``preflight(params)``: the flow's own input checks, run
    before the flow starts, so that bad input is one ``error:`` line (exit 2) without a flow run or its traceback."""
    command = FlowCommand(name, flow, summary, _parameters(flow))
    hints = command.params.model_fields

    def run(**options: Any) -> None:
        spec_file: Path | None = options.pop("spec")
        as_json: bool = options.pop("json")
        raw = {k: v for k, v in options.items() if v is not None}
        try:
            values = _load_spec(spec_file) if spec_file else {}
            source = {k: f"--spec {spec_file} '{k}'" for k in values}
            values.update(_coerce_cli(command, raw))
            source.update({k: k.upper() if k in arguments else _option(k) for k in raw})
            source.update({k: k.upper() for k in arguments if k not in values})
            params = _validated(command, values, source)
            if preflight is not None:
                try:
                    preflight(params)
                except ValidationError as exc:  # a REELFORGE_* setting the checks read (messages name it)
                    raise BadInput("; ".join(e["msg"] for e in exc.errors())) from exc
        except (BadInput, InputRejected) as exc:
            Console(stderr=True).print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from exc
        raise typer.Exit(execute(command, params, as_json=as_json))

    parameters = [_cli_argument(field, info) for field, info in hints.items() if field in arguments]
    parameters += [
        _cli_parameter(field, info, (aliases or {}).get(field))
        for field, info in hints.items()
        if field not in arguments
    ]
    parameters += [
        inspect.Parameter(
            "spec", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
            default=typer.Option(None, "--spec", help="JSON or YAML file of parameters (options override it)."),
        ),
        inspect.Parameter(
            "json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
            default=typer.Option(False, "--json", help="Print one JSON object on stdout; the rest goes to stderr."),
        ),
    ]
    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    run.__doc__ = (inspect.getdoc(flow.fn) or flow.name).split("\n\n")[0]
    run_app.command(name)(run)
    return command


def _cli_argument(field: str, info: FieldInfo) -> inspect.Parameter:
    """A positional argument (a string pydantic validates)."""
    argument = typer.Argument(None, metavar=field.upper(), help=_help(field, info), show_default=False)
    return inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=argument, annotation=str | None)


def _cli_parameter(field: str, info: FieldInfo, alias: str | None = None) -> inspect.Parameter:
    """One option: ``--x/--no-x`` for a bool parameter, ``--x VALUE`` given once per item for a ``list[str]``,
    else ``--x VALUE`` (a string pydantic validates)."""
    if info.annotation is bool:
        option = typer.Option(
            None, f"{_option(field)}/--no-{field.replace('_', '-')}", help=_help(field, info), show_default=False
        )
        return inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=bool | None)
    names = [_option(field)] + ([alias] if alias else [])
    if get_origin(info.annotation) is list:
        option = typer.Option(None, *names, metavar="TEXT", help=_help(field, info), show_default=False)
        return inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=list[str] | None)
    option = typer.Option(
        None, *names, metavar=_metavar(info.annotation), help=_help(field, info), show_default=False
    )
    return inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=str | None)


def _metavar(annotation: Any) -> str:
    """What a value looks like: ``female|male|nonbinary`` for a choice, else INT / FLOAT / TEXT / BOOL."""
    args = [annotation] if get_origin(annotation) is Literal else [
        a for a in get_args(annotation) if a is not type(None)] or [annotation]
    choices = [str(v) for a in args for v in (get_args(a) if get_origin(a) is Literal else ())]
    if choices:
        return "|".join(choices)
    names = {int: "INT", float: "FLOAT", str: "TEXT", bool: "BOOL"}
    return "/".join(names.get(a, getattr(a, "__name__", "VALUE").upper()) for a in args)


def _help(field: str, info: FieldInfo) -> str:
    """The option's help: its description, bounds and default (rich markup escaped)."""
    parts = [info.description or field.replace("_", " ")]
    bounds = []
    for meta in info.metadata:
        for name, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("multiple_of", "multiple of")):
            value = getattr(meta, name, None)
            if value is not None:
                bounds.append(f"{sign} {value}")
    if bounds:
        parts.append(", ".join(bounds))
    optional = type(None) in get_args(info.annotation)
    if info.is_required():
        parts.append("required")
    else:
        parts.append(f"default {info.default!r}" + ("; 'none' to leave it unset" if optional else ""))
    return escape("; ".join(parts))


def _coerce_cli(command: FlowCommand, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Command-line strings as the values pydantic should see: ``none``/``null`` for optional parameters."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        out[key] = None if isinstance(value, str) and value.strip().lower() in ("none", "null") else value
    return out


# ---------------------------------------------------------------------------------------------- running


class _Display:
    """A rich progress bar on stderr, fed by the flow's progress listener."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[step]}"), console=console, transient=False,
        )
        self.task = self.bar.add_task("starting", total=None, step="")
        self.flow_run_id: str | None = None

    def __call__(self, snap: ProgressSnapshot) -> None:
        self.flow_run_id = snap.flow_run_id or self.flow_run_id
        step = ""
        if snap.running:
            job, at = next(reversed(snap.running.items()))
            where = f" node {at.node}" if at.node else ""
            step = f"{job}{where} step {at.value:g}/{at.max:g}" if at.max else f"{job}{where}"
        failed = f", {snap.failed} failed" if snap.failed else ""
        self.bar.update(
            self.task, description=snap.description + failed, total=snap.planned or None,
            completed=snap.done + sum(s.fraction for s in snap.running.values()), step=step,
        )


def _payload(command: FlowCommand, state: State[Any], result: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "flow": command.flow.name,
        "flow_run_id": str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None,
        "state": state.name,
    }
    if isinstance(result, BaseModel):
        dumped = result.model_dump(mode="json")
        jobs = dumped.get("jobs", [])
        by_kind: dict[str, dict[str, int]] = {}
        for row in jobs:
            counts = by_kind.setdefault(str(row.get("kind", "gpu")), {"executed": 0, "cached": 0})
            counts["cached" if row.get("status") == "cached" else "executed"] += 1
        data |= {
            "manifest_uri": dumped.get("manifest_uri"),
            **({"summary_uri": dumped["summary_uri"]} if "summary_uri" in dumped else {}),
            "executed": dumped.get("executed"),
            "cached": dumped.get("cached"),
            "stages": by_kind,
            "result": dumped,
        }
    elif isinstance(result, BaseException):
        data["error"] = f"{type(result).__name__}: {result}"
    return data


def _raise_termination(signum: int, frame: object) -> None:
    raise TerminationSignal(signal=signum)


def execute(command: FlowCommand, params: dict[str, Any], *, as_json: bool = False) -> int:
    """Run the flow with ``params``; returns the exit code."""
    err = Console(stderr=True)
    out = err if as_json else Console()
    display = _Display(err)
    remove = add_listener(display)
    # Prefect's flow engine bridges SIGTERM into the flow and, when done, sends it again to the handler that was
    # installed before the run: with Python's default that kills the process before it can say what happened.
    previous = signal.signal(signal.SIGTERM, _raise_termination)
    try:
        with display.bar:
            running: Coroutine[Any, Any, State[Any]] = command.flow(**params, return_state=True)  # type: ignore[assignment]
            state = asyncio.run(running)
    except (KeyboardInterrupt, TerminationSignal) as stop:
        what = "terminated (SIGTERM)" if isinstance(stop, TerminationSignal) else "interrupted"
        where = f" (flow run {display.flow_run_id})" if display.flow_run_id else ""
        err.print(f"[yellow]{what}{where}:[/] its prompts were removed from every worker; nothing more runs.")
        if as_json:
            print(json.dumps({"flow": command.flow.name, "flow_run_id": display.flow_run_id, "state": "Cancelled"}))
        return EXIT_TERMINATED if isinstance(stop, TerminationSignal) else EXIT_INTERRUPTED
    finally:
        remove()
        signal.signal(signal.SIGTERM, previous)
    result = state.result(raise_on_failure=False)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    if state.is_completed():
        command.summary(result, out)
    elif isinstance(result, BaseModel):  # a flow that ends Failed with its result (a batch with rows not made)
        command.summary(result, out)
        err.print(f"[red]{command.name} {(state.name or 'failed').lower()}:[/] {escape(state.message or '')}",
                  highlight=False)
    elif isinstance(result, InputRejected):
        err.print(f"[red]error:[/] {escape(str(result))}", highlight=False)
    else:
        err.print(f"[red]{command.name} {(state.name or 'failed').lower()}:[/] {result}", highlight=False)
    if as_json:
        print(json.dumps(_payload(command, state, result), default=str))
    if state.is_completed():
        return 0
    return EXIT_BAD_INPUT if isinstance(result, InputRejected) else EXIT_FAILED


@app.command("deploy")
def deploy(
    file: Path = typer.Option(Path("prefect.yaml"), "--file", help="The prefect.yaml to read."),
    name: list[str] | None = typer.Option(None, "--name", help="Only this deployment (repeatable)."),
) -> None:
    """Register prefect.yaml's deployments (schedules, triggers, work pool) with the server in PREFECT_API_URL.

    What `prefect --no-prompt deploy --all` does, through the Python API (prefect 3.8.8's CLI stops after the
    first deployment: flows/deploy.py)."""
    from flows.deploy import deploy_all

    err = Console(stderr=True)
    try:
        applied = asyncio.run(deploy_all(file, names=name or None))
    except InputRejected as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    for full, deployment_id in applied.items():
        print(f"{full}  {deployment_id}")


def main() -> None:
    """The ``reelforge`` entry point."""
    _register_flows()
    app()


def _register_flows() -> None:
    from flows.batch import batch_flow, print_batch_summary
    from flows.character import character_flow, print_summary
    from flows.template import print_template_summary, template_flow
    from flows.video import preflight as video_preflight
    from flows.video import print_video_summary, video_flow

    if not run_app.registered_commands:
        register("character", character_flow, print_summary)
        register("batch", batch_flow, print_batch_summary, aliases={"character_type": "--type"})
        register("template", template_flow, print_template_summary, arguments=("name",),
                 aliases={"set_values": "--set", "inputs": "--input"})
        register("video", video_flow, print_video_summary, preflight=video_preflight)


if __name__ == "__main__":
    main()
    sys.exit(0)
