"""Node classes of the preview worker: schema (from ComfyUI's real catalogue) plus a CPU implementation.

Adding a class is a local change: write a function, decorate it with ``@node("ClassName")`` in a module
under ``reelforge/preview/nodes/``; its schema comes from ``catalogue/*.json`` (the real /object_info
entry), so input names, types, bounds and output types are exactly ComfyUI's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np


class NodeInterrupted(Exception):
    """Raised inside a node when the worker's interrupt flag is set (like comfy's InterruptProcessingException)."""


@dataclass(frozen=True)
class WorkerDirs:
    """The folders of one preview worker, laid out like ComfyUI's base directory."""

    root: Path

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def temp(self) -> Path:
        return self.root / "temp"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def for_type(self, kind: str) -> Path | None:
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(kind)

    def create(self) -> None:
        for p in (self.input, self.output, self.temp, self.models):
            p.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Video:
    """VIDEO value: frames ``[T,H,W,C]`` float32 in 0..1, a frame rate, optional audio."""

    frames: np.ndarray
    fps: float
    audio: dict[str, Any] | None = None


@dataclass
class ExecContext:
    """What a node sees of the running prompt; given by the executor, one per node execution."""

    prompt_id: str
    node_id: str
    prompt: dict[str, Any]  # hidden PROMPT: the whole API graph
    extra_pnginfo: dict[str, Any] | None  # hidden EXTRA_PNGINFO
    dirs: WorkerDirs
    progress: Callable[[float, float], None] = lambda value, total: None  # raises NodeInterrupted
    send_text: Callable[[str], None] = lambda text: None  # binary TEXT frame to all sockets
    # A progress step carrying a PNG preview (ComfyUI's ProgressBar with a preview image); raises NodeInterrupted.
    preview: Callable[[float, float, bytes], None] = lambda value, total, png: None


@dataclass(frozen=True)
class NodeResult:
    """Outputs by slot (as ComfyUI's ``result`` tuple) and the optional ``ui`` part for history."""

    outputs: tuple[Any, ...] = ()
    ui: dict[str, list[Any]] | None = None


RunFn = Callable[[ExecContext, dict[str, Any]], NodeResult]
FingerprintFn = Callable[[WorkerDirs, dict[str, Any]], Any]
ValidateFn = Callable[[WorkerDirs, dict[str, Any]], "str | bool"]
CombosFn = Callable[[WorkerDirs], dict[str, list[str]]]


@dataclass
class NodeClass:
    """A node class the preview worker can run."""

    name: str
    schema: dict[str, Any]
    run: RunFn
    # IS_CHANGED / fingerprint_inputs: its value joins the cache signature (NaN = always re-run).
    fingerprint: FingerprintFn | None = None
    # VALIDATE_INPUTS: returns True or an error message; built-in min/max/combo checks are skipped
    # for the inputs listed in ``validated_inputs`` (ComfyUI's rule).
    validate_inputs: ValidateFn | None = None
    validated_inputs: frozenset[str] = frozenset()
    # Combo lists computed per request from the worker's folders (input files, model files).
    combos: CombosFn | None = None
    # Key into the latency profile; defaults to the class name.
    latency_key: str | None = None
    # Model file this node loads, as (folder, input name); drives "load vs reuse" latency.
    loads_model: tuple[str, str] | None = None
    # ComfyUI's INPUT_IS_LIST (not visible in /object_info): ``run`` gets every input as a list, once.
    input_is_list: bool = False
    # True for classes run by the generic, output-type driven implementation (``nodes/generic.py``).
    generic: bool = False

    @property
    def output_node(self) -> bool:
        return bool(self.schema.get("output_node"))

    @property
    def output_types(self) -> list[str]:
        return list(self.schema.get("output", []))

    @property
    def output_is_list(self) -> list[bool]:
        """ComfyUI's OUTPUT_IS_LIST per output slot (a list output is extended, not appended, when merged)."""
        flags = list(self.schema.get("output_is_list") or [])
        return [bool(f) for f in flags] + [False] * (len(self.output_types) - len(flags))

    def input_spec(self, name: str) -> tuple[str, list[Any]] | None:
        """Return (section, spec) of an input: section is required | optional | hidden."""
        for section in ("required", "optional", "hidden"):
            spec = self.schema.get("input", {}).get(section, {}).get(name)
            if spec is not None:
                return section, spec
        return None

    def object_info(self, dirs: WorkerDirs) -> dict[str, Any]:
        """The /object_info entry, with dynamic combo lists filled from the worker's folders."""
        info: dict[str, Any] = json.loads(json.dumps(self.schema))
        if self.combos is not None:
            for input_name, values in self.combos(dirs).items():
                for section in ("required", "optional"):
                    spec = info.get("input", {}).get(section, {}).get(input_name)
                    if spec is None:
                        continue
                    if spec[0] == "COMBO":
                        spec[1]["options"] = values
                    else:
                        spec[0] = values
        return info


@dataclass
class NodeRegistry:
    """Node classes by name."""

    classes: dict[str, NodeClass] = field(default_factory=dict)

    def register(self, node_class: NodeClass) -> None:
        if node_class.name in self.classes:
            raise ValueError(f"node class {node_class.name!r} is registered twice")
        self.classes[node_class.name] = node_class

    def get(self, name: str) -> NodeClass | None:
        return self.classes.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.classes

    def __iter__(self) -> Iterator[NodeClass]:
        return iter(self.classes.values())

    def object_info(self, dirs: WorkerDirs) -> dict[str, Any]:
        return {name: cls.object_info(dirs) for name, cls in sorted(self.classes.items())}


@cache
def catalogue() -> dict[str, Any]:
    """Schemas of every class the preview worker runs: ComfyUI 0.3.64's whole ``/object_info`` (``core.json``)
    plus the custom packs' classes (``custom_*.json``)."""
    merged: dict[str, Any] = {}
    folder = resources.files("reelforge.preview") / "catalogue"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            # ``__pack__`` (and any ``__*`` key) is metadata of a custom pack file, not a node class.
            merged.update({k: v for k, v in data.items() if not k.startswith("__")})
    return merged


DEFAULT_REGISTRY = NodeRegistry()


def node(
    name: str,
    *,
    registry: NodeRegistry | None = None,
    fingerprint: FingerprintFn | None = None,
    validate_inputs: ValidateFn | None = None,
    validated_inputs: frozenset[str] = frozenset(),
    combos: CombosFn | None = None,
    latency_key: str | None = None,
    loads_model: tuple[str, str] | None = None,
    input_is_list: bool = False,
) -> Callable[[RunFn], RunFn]:
    """Register a node implementation under ``name`` with its schema from the catalogue."""

    def decorate(fn: RunFn) -> RunFn:
        schema = catalogue().get(name)
        if schema is None:
            raise KeyError(f"node class {name!r} has no schema in reelforge/preview/catalogue/")
        (registry or DEFAULT_REGISTRY).register(
            NodeClass(
                name=name,
                schema=schema,
                run=fn,
                fingerprint=fingerprint,
                validate_inputs=validate_inputs,
                validated_inputs=validated_inputs,
                combos=combos,
                latency_key=latency_key,
                loads_model=loads_model,
                input_is_list=input_is_list,
            )
        )
        return fn

    return decorate


def default_registry() -> NodeRegistry:
    """The registry with every built-in node module imported and every other catalogue class run generically."""
    from reelforge.preview import nodes  # noqa: F401  (imports register the classes)

    return DEFAULT_REGISTRY
