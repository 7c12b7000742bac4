"""The ``reelforge`` command line (typer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from reelforge.settings import WorkerSettings

app = typer.Typer(help="reelforge: generative media production on ComfyUI workers.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.command("preview-worker")
def preview_worker(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind (0 = a free one).")] = 8188,
    latency: Annotated[str, typer.Option(help="instant | gpu | gpu:SCALE | fixed:SECONDS")] = "instant",
    faults: Annotated[str | None, typer.Option(help="Fault spec, e.g. 'http500=0.1,slow_view=1.5'.")] = None,
    root: Annotated[Path | None, typer.Option(help="Folder for input/output/temp/models.")] = None,
) -> None:
    """Start a preview worker: a ComfyUI-protocol server that renders placeholders on CPU."""
    from reelforge.preview.server import serve_forever

    serve_forever(host=host, port=port, latency=latency, faults=faults, root=root)


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings (secrets masked)."""
    try:
        settings = {"workers": WorkerSettings()}
    except ValidationError as exc:
        typer.echo(f"invalid settings:\n{exc}", err=True)
        raise typer.Exit(2) from exc
    shown = {name: json.loads(s.model_dump_json()) for name, s in settings.items()}
    typer.echo(json.dumps(shown, indent=2))


if __name__ == "__main__":
    app()
