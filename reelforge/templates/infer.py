"""A manifest inferred from an API-format graph (pure): what ``reelforge templates init`` writes beside it.

``check_graph`` refuses what no template can be made of, one line per problem naming the node: a node without
``class_type``, a link that is not ``["<id>", <slot>]`` or points at a missing node or slot, a cycle, no output
node, nodes without a title or with the same title (titles are how a manifest names nodes), an unknown class
that no pack provides.

``infer_manifest`` then finds, by class, title and input name:

* prompt texts (the multiline STRING inputs of nodes that make CONDITIONING): ``prompt`` when the conditioning
  reaches a ``positive`` input (or a BasicGuider), ``negative`` when it reaches a ``negative`` one, through
  FluxGuidance, ControlNetApply..., never through ConditioningZeroOut; a title with "positive"/"negative" decides
  for an encoder that feeds both; other multiline texts (a TTS node's ``text``) by their input name;
* seeds (``seed``, ``noise_seed``), ``steps``, ``cfg``, ``denoise``, ``guidance``; ``width``, ``height``,
  ``batch_size``, ``length`` of nodes that make a LATENT or an IMAGE; ``seconds`` of audio latents;
* LoRA names (``type: model``, ``folder: loras``, the graph's file as default) and strengths;
* the files of LoadImage / LoadImageMask (``image``), LoadAudio (``audio``) and LoadVideo (``video``): required
  parameters, the input artifacts of a run;
* the value of Primitive* nodes, named after their title.

Bounds come from the class's schema, defaults from the graph. A name found on several nodes gets each node's title
(snake case) as suffix: ``seed_first_pass``, ``seed_second_pass``. Outputs are the output nodes with a stored kind,
models the loader inputs (``reelforge.comfy.graph.MODEL_INPUTS``), custom nodes the classes outside core with the
pack that provides them (the lock, the shipped pack schemas, or the ``cnr_id``/``aux_id``/``ver`` properties a
UI-format workflow keeps per node).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reelforge.comfy.graph import ModelRef, model_refs
from reelforge.templates.catalogue import Catalogue
from reelforge.templates.lock import ComfyLock, CustomNodePack

__all__ = ["Inference", "PackGuess", "check_graph", "infer_manifest", "label", "packs_from_workflow"]

OUTPUT_KINDS: dict[str, str] = {
    "SaveImage": "image", "PreviewImage": "image", "SaveAnimatedWEBP": "image", "SaveAnimatedPNG": "image",
    "SaveImageWebsocket": "image", "SaveVideo": "video", "SaveWEBM": "video", "SaveAudio": "audio",
    "SaveAudioMP3": "audio", "SaveAudioOpus": "audio", "PreviewAudio": "audio", "SaveLoRANode": "lora",
    "LoraSave": "lora", "PreviewAny": "text",
}
FILE_INPUTS: dict[tuple[str, str], tuple[str, str]] = {  # (class, input) -> (parameter name, parameter type)
    ("LoadImage", "image"): ("image", "image"),
    ("LoadImageMask", "image"): ("image", "image"),
    ("LoadAudio", "audio"): ("audio", "audio"),
    ("LoadVideo", "file"): ("video", "video"),
}
NUMBERS: dict[str, str] = {
    "seed": "seed", "noise_seed": "seed", "steps": "steps", "cfg": "cfg", "denoise": "denoise",
    "guidance": "guidance", "strength_model": "lora_strength", "strength_clip": "lora_clip_strength",
}
SIZES = frozenset({"width", "height", "batch_size", "length"})
PRIMITIVES = frozenset({"PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline",
                        "PrimitiveBoolean"})
LORA_LOADERS = frozenset({"LoraLoader", "LoraLoaderModelOnly"})
_TYPES = {"INT": "int", "FLOAT": "float", "STRING": "string", "BOOLEAN": "bool"}
_SAMPLERS = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"})


def label(graph: Mapping[str, Any], node_id: str) -> str:
    """``node #4 (CLIPTextEncode 'Positive Prompt')``: how every message names a node."""
    node = graph.get(node_id)
    if not isinstance(node, Mapping):
        return f"node #{node_id}"
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, Mapping) else None
    named = f" {title!r}" if isinstance(title, str) and title else ""
    return f"node #{node_id} ({node.get('class_type')}{named})"


def _title(node: Mapping[str, Any]) -> str | None:
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, Mapping) else None
    return title if isinstance(title, str) and title.strip() else None


def _node_order(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


# ------------------------------------------------------------------------------------------------ packs


@dataclass(frozen=True)
class PackGuess:
    """A custom node pack named by a UI workflow's node properties (``cnr_id``, ``aux_id``, ``ver``)."""

    pack: str
    repo: str
    commit: str


def packs_from_workflow(workflow: Mapping[str, Any] | None) -> dict[str, PackGuess]:
    """Class -> the pack the ComfyUI frontend recorded for it (core classes say ``cnr_id: comfy-core``)."""
    found: dict[str, PackGuess] = {}
    for node in (workflow or {}).get("nodes") or []:
        if not isinstance(node, Mapping):
            continue
        props: Mapping[str, Any] = node["properties"] if isinstance(node.get("properties"), Mapping) else {}
        cnr, aux, ver = props.get("cnr_id"), props.get("aux_id"), props.get("ver")
        if cnr == "comfy-core" or not (cnr or aux):
            continue
        repo = f"https://github.com/{aux}" if isinstance(aux, str) and aux else f"https://registry.comfy.org/nodes/{cnr}"
        pack = str(cnr or str(aux).rsplit("/", 1)[-1])
        found.setdefault(str(node.get("type")), PackGuess(pack=pack, repo=repo, commit=str(ver or "")))
    return found


def pack_for(
    class_type: str, catalogue: Catalogue, lock: ComfyLock, guesses: Mapping[str, PackGuess]
) -> tuple[str, PackGuess | None] | None:
    """The pack providing a custom class: (name, None) when the lock has it, (name, guess) when it must be
    added, None when nothing says."""
    locked = lock.pack_of(class_type)
    if locked is not None:
        return locked.pack, None
    shipped = catalogue.packs.get(class_type)
    if shipped and any(p.pack == shipped for p in lock.custom_nodes):
        return shipped, None
    guess = guesses.get(class_type)
    if guess is not None:
        existing = next((p for p in lock.custom_nodes if p.pack == guess.pack), None)
        return guess.pack, (None if existing is not None and class_type in existing.classes else guess)
    return None


# ------------------------------------------------------------------------------------------------ checks


def check_graph(
    graph: Any, catalogue: Catalogue, lock: ComfyLock, guesses: Mapping[str, PackGuess]
) -> list[str]:
    """Every reason no template can be made of ``graph``; empty when it can."""
    if not isinstance(graph, dict) or not graph:
        return ["the graph is empty or not a JSON object of node id -> node (ComfyUI API format)"]
    problems: list[str] = []
    shaped: dict[str, Mapping[str, Any]] = {}
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or not node["class_type"]:
            problems.append(f"node #{node_id} has no class_type: is this file in ComfyUI's API format?")
        elif not isinstance(node.get("inputs", {}), dict):
            problems.append(f"{label(graph, node_id)}: inputs must be a JSON object")
        else:
            shaped[str(node_id)] = node
    problems += _link_problems(graph, shaped, catalogue)
    if not problems:
        problems += _cycles(graph, shaped)
    unknown = []
    for node_id, node in shaped.items():
        cls = node["class_type"]
        if cls not in catalogue and pack_for(cls, catalogue, lock, guesses) is None:
            unknown.append(
                f"{label(graph, node_id)}: class {cls!r} is not in ComfyUI 0.3.64 core and no custom node pack in the "
                "lock (deployments/comfyui/lock.yaml) provides it: add its pack there (pack, repo, commit, classes), "
                "or give the UI-format workflow, whose node properties name the pack"
            )
    problems += unknown
    outputs = [i for i, n in shaped.items() if _is_output(n["class_type"], catalogue)]
    if shaped and not outputs and not unknown:
        problems.append(
            "the graph has no output node (SaveImage, SaveVideo, SaveAudio, PreviewImage, ...): ComfyUI would refuse "
            "it with 'Prompt has no outputs'; add a save node in ComfyUI and export again"
        )
    titles: dict[str, list[str]] = {}
    for node_id, node in shaped.items():
        title = _title(node)
        if title is None:
            problems.append(
                f"{label(graph, node_id)} has no _meta.title; a manifest names nodes by title: export again from a "
                'current ComfyUI (titles are part of "Export (API)"), or add "_meta": {"title": "..."} to the node'
            )
        else:
            titles.setdefault(title, []).append(node_id)
    for title, ids in titles.items():
        if len(ids) > 1:
            listed = ", ".join(label(graph, i) for i in sorted(ids, key=_node_order))
            problems.append(
                f"{len(ids)} nodes share the title {title!r} ({listed}); a manifest names nodes by title, so each "
                "needs its own: rename them in ComfyUI (right-click > Title) and export again, or edit _meta.title in "
                "the JSON"
            )
    return problems


def _is_output(class_type: str, catalogue: Catalogue) -> bool:
    entry = catalogue.get(class_type)
    return bool(entry and entry.get("output_node"))


def _link_problems(
    graph: Mapping[str, Any], shaped: Mapping[str, Mapping[str, Any]], catalogue: Catalogue
) -> list[str]:
    problems = []
    for node_id, node in shaped.items():
        for name, value in (node.get("inputs") or {}).items():
            if not isinstance(value, list):
                continue
            where = f"{label(graph, node_id)} input {name!r}"
            if len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], int) or isinstance(
                value[1], bool
            ):
                problems.append(
                    f'{where}: {value!r} is not a link ["<node id>", <output index>] (a literal list must be written '
                    '{"__value__": [...]})'
                )
                continue
            source = graph.get(value[0])
            if source is None:
                problems.append(f"{where} links to node #{value[0]}, which is not in the graph")
                continue
            entry = catalogue.get(str(source.get("class_type"))) if isinstance(source, Mapping) else None
            outputs = entry.get("output") if entry else None
            if isinstance(outputs, list) and not 0 <= value[1] < len(outputs):
                problems.append(
                    f"{where} links to output {value[1]} of {label(graph, value[0])}, which has "
                    f"{len(outputs)} output{'s' if len(outputs) != 1 else ''}"
                )
    return problems


def _cycles(graph: Mapping[str, Any], shaped: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A cycle through links, once, named by its nodes."""
    parents = {
        i: [v[0] for v in (n.get("inputs") or {}).values() if isinstance(v, list) and len(v) == 2 and v[0] in shaped]
        for i, n in shaped.items()
    }
    state: dict[str, int] = {}
    for start in sorted(shaped, key=_node_order):
        if state.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = []
        while stack:
            node_id, index = stack.pop()
            if index == 0:
                state[node_id] = 1
                path.append(node_id)
            children = parents[node_id]
            if index < len(children):
                stack.append((node_id, index + 1))
                child = children[index]
                if state.get(child) == 1:
                    cycle = path[path.index(child) :]
                    listed = " -> ".join(label(graph, i) for i in [*cycle, child])
                    return [f"the graph has a cycle ({listed}); ComfyUI cannot execute a graph whose links loop"]
                if not state.get(child):
                    stack.append((child, 0))
            else:
                state[node_id] = 2
                path.pop()
    return []


# ------------------------------------------------------------------------------------------------ inference


@dataclass
class Inference:
    """The manifest's parts, and what ``init`` tells the user about them."""

    kind: str
    parameters: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    models: list[ModelRef]
    custom_nodes: list[dict[str, str]]
    new_packs: dict[str, PackGuess] = field(default_factory=dict)  # pack -> guess, with the classes below
    new_pack_classes: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def snake(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    return name if name and not name[0].isdigit() else f"n_{name}" if name else "node"


def _schema_input(catalogue: Catalogue, class_type: str, name: str) -> tuple[Any, dict[str, Any]] | None:
    entry = catalogue.get(class_type)
    if entry is None:
        return None
    for section in ("required", "optional"):
        spec = (entry.get("input") or {}).get(section, {}).get(name)
        if spec is not None:
            return spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    return None


class _Finder:
    def __init__(self, graph: Mapping[str, Any], catalogue: Catalogue) -> None:
        self.graph = graph
        self.catalogue = catalogue
        self.consumers: dict[str, list[tuple[str, str]]] = {}
        for node_id in sorted(graph, key=_node_order):
            for name, value in (graph[node_id].get("inputs") or {}).items():
                if isinstance(value, list) and len(value) == 2:
                    self.consumers.setdefault(value[0], []).append((node_id, name))
        self.found: list[tuple[str, dict[str, Any]]] = []  # (base name, parameter)
        self.problems: list[str] = []

    def outputs_of(self, node_id: str) -> list[str]:
        entry = self.catalogue.get(str(self.graph[node_id].get("class_type")))
        return [str(o) for o in (entry or {}).get("output") or []]

    def role(self, node_id: str) -> set[str]:
        """Where an encoder's conditioning ends up: {"positive"}, {"negative"}, both or none."""
        roles: set[str] = set()
        seen = {node_id}
        queue = [node_id]
        while queue:
            current = queue.pop(0)
            for consumer, input_name in self.consumers.get(current, []):
                cls = self.graph[consumer].get("class_type")
                if input_name in ("positive", "negative"):
                    roles.add(input_name)
                elif cls == "BasicGuider" and input_name == "conditioning":
                    roles.add("positive")
                elif cls != "ConditioningZeroOut" and consumer not in seen:
                    seen.add(consumer)
                    queue.append(consumer)
        return roles

    def add(self, base: str, node_id: str, input_name: str, ptype: str, **extra: Any) -> None:
        node = self.graph[node_id]
        value = node["inputs"][input_name]
        param: dict[str, Any] = {"name": base, "node": _title(node), "input": input_name, "type": ptype}
        spec = _schema_input(self.catalogue, str(node["class_type"]), input_name)
        options = spec[1] if spec else {}
        if ptype == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if ptype in ("int", "float"):
            for bound in ("min", "max"):
                limit = options.get(bound)
                if isinstance(limit, int | float) and not isinstance(limit, bool):
                    param[bound] = int(limit) if ptype == "int" and float(limit).is_integer() else limit
        description = extra.pop("description", None)
        param.update(extra)
        if ptype not in ("image", "audio", "video"):
            param["default"] = value
        param["description"] = description or f"{input_name} of {_title(node)} ({node['class_type']})"
        self.found.append((base, param))

    def literal(self, node_id: str, input_name: str) -> bool:
        value = (self.graph[node_id].get("inputs") or {}).get(input_name)
        return input_name in (self.graph[node_id].get("inputs") or {}) and not isinstance(value, list | dict)

    def scan(self) -> None:
        for node_id in sorted(self.graph, key=_node_order):
            node = self.graph[node_id]
            cls = str(node["class_type"])
            inputs = node.get("inputs") or {}
            title = _title(node) or ""
            if cls in PRIMITIVES and self.literal(node_id, "value"):
                spec = _schema_input(self.catalogue, cls, "value")
                ptype = _TYPES.get(str(spec[0]) if spec else "", "string")
                self.add(snake(title), node_id, "value", ptype)
                continue
            for (file_cls, file_input), (base, ptype) in FILE_INPUTS.items():
                if cls == file_cls and file_input in inputs and self.literal(node_id, file_input):
                    self.add(base, node_id, file_input, ptype,
                             description=f"the file {title} loads (an input artifact: --input {base}=FILE)")
            makes = self.outputs_of(node_id)
            texts = [n for n in inputs if self.literal(node_id, n) and self._multiline(cls, n)]
            if texts:
                self.texts(node_id, texts, "CONDITIONING" in makes)
            for name in inputs:
                if not self.literal(node_id, name):
                    continue
                spec = _schema_input(self.catalogue, cls, name)
                value_type = _TYPES.get(str(spec[0])) if spec else None
                if name in NUMBERS and value_type in ("int", "float"):
                    if name in ("strength_model", "strength_clip") and cls not in LORA_LOADERS:
                        continue
                    self.add(NUMBERS[name], node_id, name, str(value_type))
                elif name in SIZES and value_type == "int" and ({"LATENT", "IMAGE"} & set(makes)):
                    self.add(name, node_id, name, str(value_type))
                elif name == "seconds" and value_type in ("int", "float") and "LATENT" in makes:
                    self.add(name, node_id, name, str(value_type))
                elif cls in LORA_LOADERS and name == "lora_name" and isinstance(inputs[name], str):
                    self.add("lora", node_id, name, "model", folder="loras",
                             description=f"LoRA file of {title} (a name in the worker's loras folder)")

    def _multiline(self, cls: str, name: str) -> bool:
        spec = _schema_input(self.catalogue, cls, name)
        return bool(spec and spec[0] == "STRING" and spec[1].get("multiline"))

    def texts(self, node_id: str, names: list[str], conditioning: bool) -> None:
        node = self.graph[node_id]
        title = _title(node) or ""
        if not conditioning:
            for name in names:
                self.add(name, node_id, name, "string")
            return
        roles = self.role(node_id)
        if len(roles) != 1:
            lowered = title.lower()
            hint = {"negative"} if "negative" in lowered else {"positive"} if "positive" in lowered else None
            if hint is None and len(roles) > 1:
                self.problems.append(
                    f"{label(self.graph, node_id)} feeds both positive and negative inputs, so it is neither the "
                    "prompt nor the negative prompt: put 'Positive' or 'Negative' in its title in ComfyUI and export "
                    "again, or edit the manifest"
                )
                return
            roles = hint or {"positive"}
        base = "prompt" if roles == {"positive"} else "negative"
        values = {str(node["inputs"][n]) for n in names if n != "lyrics"}
        lyrics = [n for n in names if n == "lyrics"]
        main = [n for n in names if n != "lyrics"]
        if main and len(values) == 1 and len(main) > 1:
            first = main[0]
            self.add(base, node_id, first, "string")
            param = self.found[-1][1]
            param.pop("node")
            param.pop("input")
            param["targets"] = [{"node": title, "input": n} for n in main]
            param["description"] = f"{base} text of {title} ({', '.join(main)})"
        else:
            for index, name in enumerate(main):
                self.add(base if index == 0 else f"{base}_{name}", node_id, name, "string")
        for name in lyrics:
            self.add("lyrics", node_id, name, "string")


def _named(found: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Parameter names: the base name where it is found once, base + node title where several times."""
    counts: dict[str, int] = {}
    for base, _ in found:
        counts[base] = counts.get(base, 0) + 1
    taken: set[str] = set()
    named = []
    for base, param in found:
        name = base
        if counts[base] > 1:
            node = param.get("node") or param["targets"][0]["node"]
            name = f"{base}_{snake(node)}"
        while name in taken or not name.isidentifier():
            name = f"{name}_{len(taken)}" if name.isidentifier() else f"p_{name}"
        taken.add(name)
        named.append({**{"name": name}, **{k: v for k, v in param.items() if k != "name"}})
    return named


def _order_param(param: dict[str, Any]) -> dict[str, Any]:
    keys = ["name", "node", "input", "targets", "type", "folder", "choices", "default", "min", "max", "description"]
    return {k: param[k] for k in keys if k in param}


def infer_manifest(
    graph: Mapping[str, Any], catalogue: Catalogue, lock: ComfyLock, guesses: Mapping[str, PackGuess]
) -> Inference:
    """Parameters, outputs, models, custom nodes and kind of a graph that passed :func:`check_graph`."""
    finder = _Finder(graph, catalogue)
    finder.scan()
    parameters = [_order_param(p) for p in _named(finder.found)]
    outputs: list[dict[str, Any]] = []
    notes: list[str] = []
    for node_id in sorted(graph, key=_node_order):
        node = graph[node_id]
        cls = str(node["class_type"])
        if not _is_output(cls, catalogue):
            continue
        kind = OUTPUT_KINDS.get(cls)
        if kind is None:
            notes.append(f"{label(graph, node_id)} is an output node whose files are kept as they come (kind 'file')")
            continue
        outputs.append({"node": _title(node), "kind": kind})
    problems = list(finder.problems)
    if not outputs:
        problems.append(
            "none of the graph's output nodes saves an image, video, audio, LoRA or text (SaveImage, SaveVideo, "
            "SaveAudio, SaveLoRANode, PreviewAny, ...): add one in ComfyUI and export again"
        )
    custom: list[dict[str, str]] = []
    new_packs: dict[str, PackGuess] = {}
    new_classes: dict[str, list[str]] = {}
    for cls in sorted({str(n["class_type"]) for n in graph.values()}):
        if catalogue.is_core(cls):
            continue
        found = pack_for(cls, catalogue, lock, guesses)
        if found is None:
            continue  # check_graph reported it
        pack, guess = found
        custom.append({"class": cls, "pack": pack})
        if guess is not None:
            new_packs.setdefault(pack, guess)
            new_classes.setdefault(pack, []).append(cls)
    kinds = {o["kind"] for o in outputs}
    classes = {str(n["class_type"]) for n in graph.values()}
    if "video" in kinds:
        kind = "video"
    elif "lora" in kinds:
        kind = "lora"
    elif "audio" in kinds:
        kind = "audio"
    elif "UpscaleModelLoader" in classes and not classes & _SAMPLERS:
        kind = "upscale"
    else:
        kind = "image"
    models = sorted(model_refs(dict(graph)), key=lambda r: (r.folder, r.name))
    return Inference(
        kind=kind, parameters=parameters, outputs=outputs, models=models, custom_nodes=custom,
        new_packs=new_packs, new_pack_classes=new_classes, notes=notes, problems=problems,
    )


def new_pack_entries(inference: Inference, lock: ComfyLock) -> list[CustomNodePack]:
    """Lock entries for packs the lock lacks (a pack it has, lacking a class, is not changed here)."""
    known = {p.pack for p in lock.custom_nodes}
    return [
        CustomNodePack(pack=pack, repo=guess.repo, commit=guess.commit, classes=inference.new_pack_classes[pack],
                       notes="added by `reelforge templates init` from the workflow's node properties (cnr_id, "
                             "aux_id, ver): check the repository and pin the commit")
        for pack, guess in inference.new_packs.items()
        if pack not in known
    ]
