"""Typed workflow templates: an API-format graph plus its manifest (docs/templates.md).

``load_template(name)`` reads ``workflows/NAME.json`` and ``workflows/NAME.manifest.yaml`` and checks the
manifest against the graph; ``Template.bind(params)`` returns the concrete graph; ``Template.validate(...)``
checks it against a worker's ``/object_info`` and model lists with ComfyUI's own rules. Every step reports all
of its problems at once in one :class:`TemplateError`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from reelforge.comfy.graph import MODEL_INPUTS, ModelRef, model_refs, node_classes
from reelforge.comfy.schema import (
    INPUT_FOLDER_INPUTS,
    SELF_VALIDATED_INPUTS,
    ValidationOutcome,
    get_input_info,
    validate_graph,
)
from reelforge.comfy.types import Graph
from reelforge.hashing import canonical_sha256
from reelforge.templates.catalogue import Catalogue, offline_catalogue
from reelforge.templates.errors import Problem, TemplateError
from reelforge.templates.lock import ComfyLock, LockError, default_lock
from reelforge.templates.manifest import CustomNode, Manifest, Parameter, Target

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "workflows"
GRAPH_SUFFIX = ".json"
MANIFEST_SUFFIX = ".manifest.yaml"

_PRIMITIVES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN"})
_FITS: dict[str, frozenset[str]] = {
    "int": frozenset({"INT", "FLOAT"}),
    "float": frozenset({"FLOAT"}),
    "bool": frozenset({"BOOLEAN"}),
    "string": frozenset({"STRING", "COMBO"}),
    "choice": frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}),
    "image": frozenset({"STRING", "COMBO"}),
    "audio": frozenset({"STRING", "COMBO"}),
    "video": frozenset({"STRING", "COMBO"}),
    "folder": frozenset({"STRING", "COMBO"}),
    "model": frozenset({"STRING", "COMBO"}),
}
_LISTS = ("parameters", "outputs", "models", "custom_nodes")
_ARTICLE = {"int": "an int", "float": "a float", "bool": "a bool", "string": "a string"}


@dataclass(frozen=True)
class TemplateOutput:
    """An output of a template: the output node (title and id) and what it produces."""

    title: str
    node_id: str
    kind: str


class WorkerInfo(Protocol):
    """What :func:`validate_on_worker` needs of a worker client (``ComfyClient`` has it)."""

    async def object_info(self, refresh: bool = False) -> dict[str, Any]: ...

    async def models(self, folder: str | None = None) -> list[str]: ...


# ------------------------------------------------------------------------------------------ value checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind_of(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_ref(value: Any, what: str) -> str | None:
    if not isinstance(value, str):
        return f"expected {what} (a string), got {_kind_of(value)}"
    if not value.strip():
        return f"expected {what}, got an empty string"
    path = value.removesuffix(" [output]").removesuffix(" [input]").removesuffix(" [temp]")
    if path.startswith(("/", "\\")) or ".." in path.replace("\\", "/").split("/"):
        return f"{what} {value!r} must be a relative path inside the worker's folder"
    return None


def check_value(param: Parameter, value: Any) -> list[str]:
    """Why ``value`` does not fit ``param`` (type, bounds, choices); empty when it does. Strict: no coercion."""
    kind = param.type
    if kind == "string":
        if not isinstance(value, str):
            return [f"expected a string, got {_kind_of(value)}"]
        return []
    if kind == "bool":
        return [] if isinstance(value, bool) else [f"expected a bool, got {_kind_of(value)}"]
    if kind in ("int", "float"):
        ok = _is_int(value) if kind == "int" else _is_number(value)
        if not ok:
            return [f"expected {_ARTICLE[kind]}, got {_kind_of(value)}"]
        if kind == "float" and not math.isfinite(value):
            return [f"value {value!r} is not a finite number"]
        problems = []
        if param.min is not None and value < param.min:
            problems.append(f"value {value!r} is below the minimum {param.min!r}")
        if param.max is not None and value > param.max:
            problems.append(f"value {value!r} is above the maximum {param.max!r}")
        return problems
    if kind == "choice":
        choices = param.choices or []
        if not any(type(c) is type(value) and c == value for c in choices):
            return [f"value {value!r} is not one of {choices!r}"]
        return []
    what = {"image": "an image file", "audio": "an audio file", "video": "a video file", "folder": "an input folder"}
    problem = _check_ref(value, what.get(kind, "a model file"))
    return [problem] if problem else []


def _input_spec(entry: Mapping[str, Any] | None, input_name: str) -> tuple[Any, dict[str, Any]] | None:
    if entry is None:
        return None
    input_type, category, extra = get_input_info(entry.get("input") or {}, input_name)
    if category is None:
        return None
    return input_type, extra or {}


def _type_name(input_type: Any) -> str:
    if isinstance(input_type, list):
        return "COMBO"
    return str(input_type)


# ------------------------------------------------------------------------------------------------ template


class Template:
    """A loaded, checked template. Build with :func:`load_template` or :meth:`Template.from_data`."""

    def __init__(
        self,
        *,
        name: str,
        graph: Graph,
        manifest: Manifest,
        raw_manifest: Mapping[str, Any],
        titles: Mapping[str, str],
        path: Path | None = None,
    ) -> None:
        self._graph = copy.deepcopy(dict(graph))
        self.manifest = manifest
        self._raw_manifest = copy.deepcopy(dict(raw_manifest))
        self._titles = dict(titles)  # unique title -> node id
        self.path = path
        self._name = name
        self._version = canonical_sha256({"graph": self._graph, "manifest": self._raw_manifest})
        self._bound_to: dict[tuple[str, str], str] = {}
        for param in manifest.parameters:
            for target in param.all_targets:
                self._bound_to[(self._titles[target.node], target.input)] = param.name

    # -- facts

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def description(self) -> str:
        return self.manifest.description

    @property
    def version(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no whitespace) of ``{"graph": ..., "manifest": ...}``."""
        return self._version

    @property
    def graph(self) -> Graph:
        """A copy of the template's graph (as exported, without parameters bound)."""
        return copy.deepcopy(self._graph)

    @property
    def parameters(self) -> dict[str, Parameter]:
        """Parameters by name, in manifest order."""
        return {p.name: p for p in self.manifest.parameters}

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: copy.deepcopy(p.default) for p in self.manifest.parameters if p.has_default}

    @property
    def required(self) -> list[str]:
        return [p.name for p in self.manifest.parameters if p.required]

    @property
    def outputs(self) -> list[TemplateOutput]:
        return [TemplateOutput(o.node, self._titles[o.node], o.kind) for o in self.manifest.outputs]

    @property
    def models(self) -> list[ModelRef]:
        """The model files the manifest lists."""
        return [ModelRef(folder=m.folder, name=m.name) for m in self.manifest.models]

    @property
    def custom_nodes(self) -> list[CustomNode]:
        return list(self.manifest.custom_nodes)

    @property
    def node_classes(self) -> set[str]:
        return node_classes(self._graph)

    def node_id(self, title: str) -> str:
        """The id of the node with this (unique) title."""
        try:
            return self._titles[title]
        except KeyError:
            raise KeyError(f"template {self.name!r} has no node titled {title!r}") from None

    def title_of(self, node_id: str) -> str | None:
        node = self._graph.get(node_id)
        meta = node.get("_meta") if isinstance(node, dict) else None
        title = meta.get("title") if isinstance(meta, dict) else None
        return title if isinstance(title, str) else None

    def __repr__(self) -> str:
        return f"Template({self.name!r}, kind={self.kind!r}, version={self.version[:12]!r})"

    # -- binding

    def _problem(self, message: str, param: Parameter | None = None, **kw: Any) -> Problem:
        if param is not None and "node_title" not in kw:
            targets = param.all_targets
            if targets:
                kw["node_title"] = targets[0].node
                kw["input"] = targets[0].input
        return Problem(template=self.name, parameter=param.name if param else None, message=message, **kw)

    def _apply(self, params: Mapping[str, Any], *, require: bool) -> tuple[Graph, list[Problem], list[Parameter]]:
        """Bound graph, problems, and the required parameters left unbound (only when not ``require``)."""
        problems: list[Problem] = []
        unbound: list[Parameter] = []
        if not isinstance(params, Mapping):
            message = f"parameters must be a mapping of name -> value, got {_kind_of(params)}"
            return {}, [self._problem(message)], unbound
        known = self.parameters
        for name in params:
            if name not in known:
                listed = ", ".join(known) or "none"
                problems.append(
                    Problem(template=self.name, parameter=str(name), message=f"unknown parameter (known: {listed})")
                )
        graph = copy.deepcopy(self._graph)
        for param in self.manifest.parameters:
            if param.name in params:
                value = params[param.name]
                errors = check_value(param, value)
                problems += [self._problem(e, param) for e in errors]
                if errors:
                    continue
            elif param.has_default:
                value = param.default
            else:
                if require:
                    problems.append(self._problem("required parameter is missing", param))
                else:
                    unbound.append(param)
                continue
            for target in param.all_targets:
                graph[self._titles[target.node]]["inputs"][target.input] = copy.deepcopy(value)
        return graph, problems, unbound

    def bind(self, params: Mapping[str, Any] | None = None) -> Graph:
        """The concrete graph: a deep copy with every parameter's value (or default) set on its targets.

        Raises :class:`TemplateError` listing every unknown name, missing required parameter, wrong type, value
        out of bounds or not among the choices. The template's own graph never changes.
        """
        graph, problems, _ = self._apply(params if params is not None else {}, require=True)
        if problems:
            raise TemplateError(problems)
        return graph

    # -- validation against a worker

    def validate(
        self,
        object_info: Mapping[str, Any],
        models: Mapping[str, Iterable[str]] | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        check_input_folders: bool = False,
        lock: ComfyLock | None = None,
    ) -> Graph:
        """Check the graph as a worker with this ``/object_info`` and these model files would, before queueing.

        With ``params`` the bound graph is checked (binding problems are raised first); without, the template's
        graph with its defaults, where inputs of required parameters are not value-checked (their value comes
        with a job). ``models`` maps folder keys to files (``GET /models/<folder>``): loader combos
        are checked against it and every model file of the manifest must be there; a missing file is one
        problem naming its folder and name (not also ComfyUI's combo error). Every node class the worker lacks
        is one problem naming the custom node pack that provides it (manifest, then ``lock``, default the
        checkout's lock), where ComfyUI would stop at the first. Returns the graph with ComfyUI's coercions
        applied; raises :class:`TemplateError` whose problems carry node title, input, ComfyUI's error type and
        message.
        """
        unbound: list[Parameter] = []
        if params is not None:
            graph = self.bind(params)
        else:
            graph, problems, unbound = self._apply({}, require=False)
            if problems:
                raise TemplateError(problems)
        unchecked = [(self._titles[t.node], t.input) for p in unbound for t in p.all_targets]
        outcome = validate_graph(
            graph, object_info, models, check_input_folders=check_input_folders, unchecked=unchecked
        )
        # ComfyUI stops at the first unknown class; a worker missing a pack should name all it lacks at once.
        problems = self._class_problems(graph, object_info, lock) or self._outcome_problems(outcome)
        if models is not None:
            problems = self._merge_model_problems(
                graph, problems, self._model_problems(graph, models, {p.name for p in unbound})
            )
        if problems:
            raise TemplateError(problems)
        return outcome.coerced

    def _class_problems(self, graph: Graph, object_info: Mapping[str, Any], lock: ComfyLock | None) -> list[Problem]:
        """One problem per node class missing from ``object_info``, naming the pack that provides it."""
        first_use: dict[str, str] = {}
        for node_id, node in graph.items():
            class_type = str(node.get("class_type"))
            if not isinstance(object_info.get(class_type), Mapping):
                first_use.setdefault(class_type, node_id)
        if not first_use:
            return []
        lock = lock if lock is not None else _tolerant_default_lock()
        declared = {c.class_: c.pack for c in self.manifest.custom_nodes}
        catalogue = offline_catalogue()
        problems: list[Problem] = []
        for class_type, node_id in first_use.items():
            locked = lock.pack_of(class_type) if lock is not None else None
            pack = declared.get(class_type) or (locked.pack if locked else None) or catalogue.packs.get(class_type)
            if pack:
                pinned = next((p for p in lock.custom_nodes if p.pack == pack), None) if lock is not None else None
                where = f" ({pinned.repo} @ {pinned.commit[:12]})" if pinned else ""
                hint = f"it comes from the custom node pack {pack!r}{where}, which the worker has not loaded"
            elif catalogue.is_core(class_type):
                hint = "it is a ComfyUI core class (in the locked 0.3.64): is the worker's ComfyUI older?"
            else:
                hint = "no custom node pack in the lock or the manifest provides it"
            problems.append(
                Problem(
                    template=self.name,
                    node_id=node_id,
                    node_title=self.title_of(node_id),
                    error_type="invalid_prompt",
                    message=f"Cannot execute because node {class_type} does not exist: {hint}",
                )
            )
        return problems

    def _merge_model_problems(
        self, graph: Graph, problems: list[Problem], missing: list[tuple[ModelRef, Problem]]
    ) -> list[Problem]:
        """Problems with each missing model file reported once: its own problem replaces ComfyUI's combo error.

        A loader naming an absent file fails ComfyUI's combo check (``value_not_in_list``) and our model-file
        check; the model-file problem, which names folder and file, takes the combo error's place and type.
        """
        by_ref = dict(missing)
        placed: set[ModelRef] = set()
        merged: list[Problem] = []
        for problem in problems:
            ref = self._combo_model_ref(graph, problem)
            if ref is None or ref not in by_ref:
                merged.append(problem)
                continue
            if ref not in placed:  # the same file loaded by several nodes: still one problem
                placed.add(ref)
                merged.append(by_ref[ref].model_copy(update={"error_type": problem.error_type}))
        merged += [p for ref, p in missing if ref not in placed]
        return merged

    @staticmethod
    def _combo_model_ref(graph: Graph, problem: Problem) -> ModelRef | None:
        """The model file a ``value_not_in_list`` problem on a loader input is about, else None."""
        if problem.error_type != "value_not_in_list" or problem.node_id is None or problem.input is None:
            return None
        node = graph.get(problem.node_id) or {}
        folder = MODEL_INPUTS.get((str(node.get("class_type")), problem.input))
        value = (node.get("inputs") or {}).get(problem.input)
        return ModelRef(folder=folder, name=value) if folder and isinstance(value, str) else None

    def _outcome_problems(self, outcome: ValidationOutcome) -> list[Problem]:
        problems: list[Problem] = []
        if outcome.error and not outcome.node_errors:
            error = outcome.error
            details = str(error.get("details") or "")
            node_id = None
            if details.startswith("Node ID '#") and details.endswith("'"):
                node_id = details[len("Node ID '#") : -1]
            message = str(error.get("message", ""))
            if details and node_id is None:
                message += f": {details}"
            problems.append(
                Problem(
                    template=self.name,
                    message=message,
                    error_type=str(error.get("type", "")),
                    node_id=node_id,
                    node_title=self.title_of(node_id) if node_id else None,
                )
            )
        for node_id, entry in outcome.node_errors.items():
            for err in entry.get("errors", []):
                extra = err.get("extra_info") or {}
                input_name = extra.get("input_name") if isinstance(extra, dict) else None
                details = str(err.get("details") or "")
                message = str(err.get("message", ""))
                if details and details != input_name:
                    message += f": {details}"
                problems.append(
                    Problem(
                        template=self.name,
                        parameter=self._bound_to.get((node_id, str(input_name))) if input_name else None,
                        node_id=node_id,
                        node_title=self.title_of(node_id),
                        input=str(input_name) if input_name else None,
                        error_type=str(err.get("type", "")),
                        message=message,
                    )
                )
        return problems

    def _where_loaded(self, graph: Graph) -> dict[ModelRef, tuple[str, str]]:
        where: dict[ModelRef, tuple[str, str]] = {}
        for node_id, node in graph.items():
            for input_name, value in (node.get("inputs") or {}).items():
                folder = MODEL_INPUTS.get((str(node.get("class_type")), input_name))
                if folder and isinstance(value, str):
                    where.setdefault(ModelRef(folder=folder, name=value), (node_id, input_name))
        return where

    def _model_problems(
        self, graph: Graph, models: Mapping[str, Iterable[str]], unbound: set[str]
    ) -> list[tuple[ModelRef, Problem]]:
        """Each model file the graph needs that is not among ``models``, with its problem."""
        available = {folder: set(files) for folder, files in models.items()}
        where = self._where_loaded(graph)
        needed: list[tuple[ModelRef, str | None]] = [(ref, None) for ref in self.models]
        for param in self.manifest.parameters:
            if param.type == "model" and param.folder and param.name not in unbound:
                targets = param.all_targets
                value = graph[self._titles[targets[0].node]]["inputs"].get(targets[0].input) if targets else None
                if isinstance(value, str):
                    needed.append((ModelRef(folder=param.folder, name=value), param.name))
        problems: list[tuple[ModelRef, Problem]] = []
        seen: set[ModelRef] = set()
        for ref, param_name in needed:
            if ref in seen or ref.name in available.get(ref.folder, set()):
                continue
            seen.add(ref)
            node_id, input_name = where.get(ref, (None, None))
            problem = Problem(
                template=self.name,
                parameter=param_name
                or (self._bound_to.get((node_id, input_name)) if node_id and input_name else None),
                node_id=node_id,
                node_title=self.title_of(node_id) if node_id else None,
                input=input_name,
                message=f"model file {ref} is not on the worker",
            )
            problems.append((ref, problem))
        return problems

    # -- construction

    @classmethod
    def from_data(
        cls,
        name: str,
        graph: Any,
        manifest: Any,
        *,
        catalogue: Catalogue | None = None,
        path: Path | None = None,
    ) -> Template:
        """Check a graph and its manifest (parsed YAML) together; raise every problem in one TemplateError."""
        return _Loader(name, graph, manifest, catalogue or offline_catalogue(), path).load()


class _Loader:
    """The load-time checks of one template, collecting problems."""

    def __init__(self, name: str, graph: Any, raw: Any, catalogue: Catalogue, path: Path | None) -> None:
        self.name = name
        self.graph = graph
        self.raw = raw
        self.catalogue = catalogue
        self.path = path
        self.problems: list[Problem] = []
        self.titles: dict[str, list[str]] = {}

    def problem(self, message: str, **kw: Any) -> None:
        self.problems.append(Problem(template=self.name, message=message, **kw))

    # graph shape and titles
    def check_graph(self) -> bool:
        if not isinstance(self.graph, dict) or not self.graph:
            self.problem("the graph must be a non-empty JSON object of node id -> node (ComfyUI API format)")
            return False
        ok = True
        for node_id, node in self.graph.items():
            if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
                self.problem("node has no class_type (is the file in API format?)", node_id=str(node_id))
                ok = False
                continue
            if not isinstance(node.get("inputs", {}), dict):
                self.problem("node inputs must be an object", node_id=str(node_id))
                ok = False
                continue
            meta = node.get("_meta")
            title = meta.get("title") if isinstance(meta, dict) else None
            if not isinstance(title, str) or not title:
                self.problem(f"node ({node['class_type']}) has no _meta.title", node_id=str(node_id))
                continue
            self.titles.setdefault(title, []).append(str(node_id))
        for title, ids in self.titles.items():
            if len(ids) > 1:
                listed = ", ".join(f"#{i}" for i in ids)
                message = f"node title is used by {len(ids)} nodes ({listed}); titles must be unique"
                self.problem(message, node_title=title)
        return ok

    # manifest shape: pydantic, item by item, so one bad entry does not hide the others
    def parse_manifest(self) -> Manifest | None:
        raw = self.raw
        if not isinstance(raw, dict):
            self.problem(f"the manifest must be a YAML mapping, got {type(raw).__name__}")
            return None
        try:
            return Manifest.model_validate(raw)
        except ValidationError as exc:
            errors = exc.errors()
        cleaned = copy.deepcopy(raw)
        drop: dict[str, set[int]] = {}
        for err in errors:
            loc = err["loc"]
            field = str(loc[0]) if loc else ""
            where = ".".join(str(x) for x in loc)
            param = None
            items = raw.get(field)
            if field in _LISTS and len(loc) > 1 and isinstance(loc[1], int) and isinstance(items, list):
                drop.setdefault(field, set()).add(loc[1])
                item = items[loc[1]]
                if field == "parameters" and isinstance(item, dict) and isinstance(item.get("name"), str):
                    param = item["name"]
            else:
                cleaned.pop(field, None)
            value = f" (got {err['input']!r})" if err["type"] not in ("missing", "extra_forbidden") else ""
            self.problem(f"manifest {where}: {err['msg']}{value}", parameter=param)
        for field, indexes in drop.items():
            cleaned[field] = [x for i, x in enumerate(raw[field]) if i not in indexes]
        cleaned.setdefault("name", self.name)
        cleaned.setdefault("kind", "image")
        try:
            return Manifest.model_validate(cleaned)
        except ValidationError:  # pragma: no cover - every failing part was dropped above
            return None

    def resolve(self, title: str, **where: Any) -> str | None:
        ids = self.titles.get(title, [])
        if not ids:
            self.problem("no node with this title in the graph", node_title=title, **where)
            return None
        if len(ids) > 1:
            listed = ", ".join(f"#{i}" for i in ids)
            self.problem(f"node title is not unique in the graph ({listed})", node_title=title, **where)
            return None
        return ids[0]

    def check_parameter(self, param: Parameter, bound: dict[tuple[str, str], str]) -> None:
        name = param.name
        first = param.all_targets[0] if param.all_targets else None
        at = {"node_title": first.node, "input": first.input} if first else {}

        def problem(message: str, **kw: Any) -> None:
            self.problem(message, parameter=name, **({**at, **kw}))

        if not name.isidentifier():
            problem("parameter names must be identifiers (letters, digits, _)")
        has_pair = param.node is not None or param.input is not None
        if param.targets is not None and has_pair:
            problem("give either node/input or targets, not both")
        elif param.targets is None and (param.node is None or param.input is None):
            problem("a parameter needs node and input (or targets)")
        elif param.targets is not None and not param.targets:
            problem("targets is empty")
        numeric = param.type in ("int", "float")
        for bound_name in ("min", "max"):
            limit = getattr(param, bound_name)
            if limit is None:
                continue
            if not numeric:
                problem(f"{bound_name} applies to int and float parameters only, not {param.type}")
            elif param.type == "int" and not _is_int(limit):
                problem(f"{bound_name} of an int parameter must be an int, got {_kind_of(limit)}")
        if param.min is not None and param.max is not None and _is_number(param.min) and param.min > param.max:
            problem(f"min {param.min!r} is above max {param.max!r}")
        if param.type == "choice":
            if not param.choices:
                problem("a choice parameter needs a non-empty choices list")
        elif param.choices is not None:
            problem(f"choices apply to choice parameters only, not {param.type}")
        if param.type == "model" and not param.folder:
            problem("a model parameter needs folder (the model folder key, e.g. loras)")
        elif param.type != "model" and param.folder is not None:
            problem(f"folder applies to model parameters only, not {param.type}")
        if param.has_default and (param.type != "choice" or param.choices):
            for message in check_value(param, param.default):
                problem(f"default: {message}")

        for target in param.all_targets:
            where = {"node_title": target.node, "input": target.input}
            node_id = self.resolve(target.node, parameter=name, input=target.input)
            if node_id is None:
                continue
            node = self.graph[node_id]
            inputs = node.get("inputs") or {}
            class_type = node["class_type"]
            if target.input not in inputs:
                listed = ", ".join(inputs) or "none"
                self.problem(
                    f"node ({class_type}) has no input {target.input!r} (inputs: {listed})", parameter=name, **where
                )
                continue
            if isinstance(inputs[target.input], list):
                self.problem(
                    "this input is a link in the graph, not a value a parameter can set", parameter=name, **where
                )
                continue
            other = bound.get((node_id, target.input))
            if other is not None and other != name:
                self.problem(f"this input is also set by parameter {other!r}", parameter=name, **where)
            bound[(node_id, target.input)] = name
            self.check_fit(param, class_type, target)

    def check_fit(self, param: Parameter, class_type: str, target: Target) -> None:
        where = {"parameter": param.name, "node_title": target.node, "input": target.input}
        folder = MODEL_INPUTS.get((class_type, target.input))
        if param.type == "model" and folder and param.folder and folder != param.folder:
            self.problem(f"{class_type}.{target.input} loads from folder {folder!r}, not {param.folder!r}", **where)
        spec = _input_spec(self.catalogue.get(class_type), target.input)
        if spec is None:
            return
        input_type, extra = spec
        type_name = _type_name(input_type)
        if type_name not in _PRIMITIVES and type_name != "COMBO":
            self.problem(f"{class_type}.{target.input} takes {type_name} links, not a {param.type} value", **where)
            return
        if type_name not in _FITS[param.type]:
            self.problem(f"a {param.type} parameter cannot set {class_type}.{target.input} ({type_name})", **where)
            return
        if param.type == "choice" and type_name == "COMBO" and param.choices:
            options = input_type if isinstance(input_type, list) else extra.get("options", [])
            free = (
                folder is not None
                or target.input in SELF_VALIDATED_INPUTS.get(class_type, ())
                or target.input in INPUT_FOLDER_INPUTS.get(class_type, ())
            )
            bad = [c for c in param.choices if c not in options]
            if not free and bad:
                self.problem(
                    f"choices {bad!r} are not accepted by {class_type}.{target.input} (it takes {options!r})", **where
                )

    def check_outputs(self, manifest: Manifest) -> None:
        if not manifest.outputs:
            self.problem("the manifest lists no outputs")
        for output in manifest.outputs:
            node_id = self.resolve(output.node)
            if node_id is None:
                continue
            class_type = self.graph[node_id]["class_type"]
            entry = self.catalogue.get(class_type)
            if entry is not None and not entry.get("output_node"):
                self.problem(f"outputs: node ({class_type}) is not an output node", node_title=output.node)

    def check_models(self, manifest: Manifest, bound: dict[tuple[str, str], str]) -> None:
        listed = {(m.folder, m.name) for m in manifest.models}
        if len(listed) != len(manifest.models):
            self.problem("models lists a file twice")
        params = {p.name: p for p in manifest.parameters}
        for node_id, node in self.graph.items():
            for ref in sorted(model_refs({node_id: node}), key=str):
                inputs = [
                    i
                    for i, v in (node.get("inputs") or {}).items()
                    if MODEL_INPUTS.get((node["class_type"], i)) == ref.folder and v == ref.name
                ]
                input_name = inputs[0] if inputs else None
                setter = bound.get((node_id, input_name)) if input_name is not None else None
                if setter is not None and params[setter].type == "model":
                    continue  # the file is a parameter: checked when bound
                if (ref.folder, ref.name) not in listed:
                    self.problem(
                        f"model file {ref} is loaded here but not listed under models",
                        node_title=self._title(node_id),
                        input=input_name,
                        node_id=node_id,
                    )

    def check_custom_nodes(self, manifest: Manifest) -> None:
        declared: dict[str, str] = {}
        for entry in manifest.custom_nodes:
            if entry.class_ in declared:
                self.problem(f"custom_nodes lists class {entry.class_!r} twice")
            declared[entry.class_] = entry.pack
        used = {node["class_type"]: node_id for node_id, node in self.graph.items()}
        for class_type, node_id in used.items():
            if self.catalogue.is_core(class_type) or class_type in declared:
                continue
            self.problem(
                f"class {class_type!r} is not in ComfyUI core; list it under custom_nodes with its pack",
                node_title=self._title(node_id),
                node_id=node_id,
            )
        for class_type, pack in declared.items():
            if class_type not in used:
                self.problem(f"custom_nodes lists class {class_type!r}, which the graph does not use")
            elif self.catalogue.is_core(class_type):
                self.problem(f"custom_nodes lists class {class_type!r}, which is in ComfyUI core")
            known = self.catalogue.packs.get(class_type)
            if known and known != pack:
                self.problem(f"class {class_type!r} comes from pack {known!r}, not {pack!r}")

    def _title(self, node_id: str) -> str | None:
        meta = self.graph[node_id].get("_meta")
        title = meta.get("title") if isinstance(meta, dict) else None
        return title if isinstance(title, str) else None

    def load(self) -> Template:
        graph_ok = self.check_graph()
        manifest = self.parse_manifest()
        if manifest is not None:
            if manifest.name != self.name:
                self.problem(f"manifest name {manifest.name!r} does not match the file name {self.name!r}")
            seen: set[str] = set()
            for param in manifest.parameters:
                if param.name in seen:
                    self.problem("parameter name is used twice", parameter=param.name)
                seen.add(param.name)
            if graph_ok:
                bound: dict[tuple[str, str], str] = {}
                for param in manifest.parameters:
                    self.check_parameter(param, bound)
                self.check_outputs(manifest)
                self.check_models(manifest, bound)
                self.check_custom_nodes(manifest)
        if self.problems or manifest is None:
            raise TemplateError(self.problems)
        titles = {t: ids[0] for t, ids in self.titles.items() if len(ids) == 1}
        return Template(
            name=self.name, graph=self.graph, manifest=manifest, raw_manifest=self.raw, titles=titles, path=self.path
        )


# ------------------------------------------------------------------------------------------------ loading


def _paths(name_or_path: str | Path, folder: Path | None) -> tuple[str, Path, Path]:
    text = str(name_or_path)
    as_path = Path(text)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith((GRAPH_SUFFIX, ".yaml")):
        base = as_path.name
        parent = as_path.parent
    else:
        base = text
        parent = folder or DEFAULT_FOLDER
    for suffix in (MANIFEST_SUFFIX, GRAPH_SUFFIX):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base, parent / f"{base}{GRAPH_SUFFIX}", parent / f"{base}{MANIFEST_SUFFIX}"


def _read_text(path: Path, what: str, template: str, problems: list[Problem]) -> str | None:
    """The file's UTF-8 text, or None with a problem naming the file appended to ``problems``."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        reason = "not found"
    except IsADirectoryError:
        reason = "is a directory, not a file"
    except UnicodeDecodeError as exc:
        reason = f"is not UTF-8 text ({exc.reason} at byte {exc.start})"
    except OSError as exc:  # permissions, a dangling link, I/O errors: still one problem, not a traceback
        reason = f"cannot be read: {exc.strerror or exc}"
    problems.append(Problem(template=template, message=f"{what} {path} {reason}"))
    return None


def load_template(
    name_or_path: str | Path, *, folder: Path | None = None, catalogue: Catalogue | None = None
) -> Template:
    """Load ``NAME.json`` + ``NAME.manifest.yaml`` (from ``folder``, default workflows/, or a path to either)."""
    name, graph_path, manifest_path = _paths(name_or_path, folder)
    problems: list[Problem] = []
    graph: Any = None
    raw: Any = None
    graph_text = _read_text(graph_path, "graph file", name, problems)
    if graph_text is not None:
        try:
            graph = json.loads(graph_text)
        except json.JSONDecodeError as exc:
            problems.append(Problem(template=name, message=f"graph file {graph_path} is not valid JSON: {exc}"))
    manifest_text = _read_text(manifest_path, "manifest", name, problems)
    if manifest_text is not None:
        try:
            raw = yaml.safe_load(manifest_text)
        except yaml.YAMLError as exc:
            problems.append(Problem(template=name, message=f"manifest {manifest_path} is not valid YAML: {exc}"))
    if problems:
        raise TemplateError(problems)
    return Template.from_data(name, graph, raw, catalogue=catalogue, path=graph_path)


def template_names(folder: Path | None = None) -> list[str]:
    """Names of the templates in ``folder``: every ``NAME.json`` and every ``NAME.manifest.yaml``."""
    folder = folder or DEFAULT_FOLDER
    names = {p.name[: -len(MANIFEST_SUFFIX)] for p in folder.glob(f"*{MANIFEST_SUFFIX}")}
    names |= {p.stem for p in folder.glob(f"*{GRAPH_SUFFIX}")}
    return sorted(names)


def load_all(folder: Path | None = None, *, catalogue: Catalogue | None = None) -> dict[str, Template]:
    """Every template of ``folder`` (default workflows/); problems of all templates raised together."""
    folder = folder or DEFAULT_FOLDER
    templates: dict[str, Template] = {}
    problems: list[Problem] = []
    for name in template_names(folder):
        try:
            templates[name] = load_template(name, folder=folder, catalogue=catalogue)
        except TemplateError as exc:
            problems += exc.problems
    if problems:
        raise TemplateError(problems)
    return templates


def _tolerant_default_lock() -> ComfyLock | None:
    """The checkout's lock, or None where it is absent (an installed package): packs are then not named."""
    try:
        return default_lock()
    except LockError:
        return None


def check_against_lock(template: Template, lock: ComfyLock) -> list[Problem]:
    """Custom node classes of the template are provided by the pack its manifest names, pinned in the lock."""
    problems: list[Problem] = []
    packs = {p.pack for p in lock.custom_nodes}
    for entry in template.custom_nodes:
        provider = lock.pack_of(entry.class_)
        if entry.pack not in packs:
            message = f"custom node pack {entry.pack!r} (class {entry.class_!r}) is not in the lock"
        elif provider is None:
            message = f"class {entry.class_!r} is not among the classes of pack {entry.pack!r} in the lock"
        elif provider.pack != entry.pack:
            message = f"class {entry.class_!r} comes from pack {provider.pack!r} in the lock, not {entry.pack!r}"
        else:
            continue
        problems.append(Problem(template=template.name, message=message))
    return problems


async def worker_models(client: WorkerInfo, folders: Iterable[str]) -> dict[str, list[str]]:
    """The files of each model folder on the worker (an unknown folder: no files)."""
    wanted = sorted(set(folders))
    present = set(await client.models())
    found = await asyncio.gather(*(client.models(f) for f in wanted if f in present))
    lists = dict(zip([f for f in wanted if f in present], found, strict=True))
    return {f: lists.get(f, []) for f in wanted}


def model_folders(template: Template) -> set[str]:
    """Model folders a template's validation looks at: listed files, model parameters, loader inputs."""
    folders = {m.folder for m in template.models}
    folders |= {p.folder for p in template.parameters.values() if p.type == "model" and p.folder}
    classes = template.node_classes
    folders |= {folder for (cls, _), folder in MODEL_INPUTS.items() if cls in classes}
    return folders


async def validate_on_worker(template: Template, client: WorkerInfo, params: Mapping[str, Any] | None = None) -> Graph:
    """:meth:`Template.validate` against a live worker's ``/object_info`` and ``/models`` lists."""
    object_info = await client.object_info()
    models = await worker_models(client, model_folders(template))
    return template.validate(object_info, models, params)
