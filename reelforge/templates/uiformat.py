"""UI-format workflows (what ComfyUI saves by default: ``nodes`` + ``links``) to API format, from ``/object_info``.

It does what the frontend's ``graphToPrompt`` does, and refuses wherever that needs the frontend's own code:

* a node's ``widgets_values`` are matched to its class's widget inputs in ``/object_info`` order (required, then
  optional); an INT with ``control_after_generate`` (or named ``seed`` / ``noise_seed`` without it being false)
  is followed by its control value (``fixed``, ``increment``, ``decrement``, ``randomize``), a COMBO with it by a
  control value and a filter; ``forceInput`` inputs are sockets, not widgets; the upload button of
  ``image_upload`` / ``audio_upload`` / ``video_upload`` combos may or may not have a value, right after its combo
  or last. Every value must fit its widget's type (and a COMBO's list, where the list is not a file list); exactly
  one matching layout is accepted, none or several refuse the node;
* muted nodes (mode 2) and bypassed nodes (mode 4) are left out; a link from a muted node is dropped, a link from
  a bypassed node goes to the bypassed node's input of the same slot when its type fits, else its first input of
  the output's type (the frontend's rule), dropped when that input has no link;
* ``Reroute`` nodes are followed, ``PrimitiveNode`` values are copied into the inputs they drive, ``Note`` and
  ``MarkdownNote`` ignored; a node's title is its ``title`` or its class's ``display_name``;
* subgraphs, group nodes, classes without a schema here and dict-shaped ``widgets_values`` (custom frontends)
  are refused with the way to export API format instead.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from reelforge.comfy.graph import MODEL_INPUTS
from reelforge.comfy.schema import INPUT_FOLDER_INPUTS, SELF_VALIDATED_INPUTS
from reelforge.templates.errors import InitRefused
from reelforge.templates.sources import HOW_TO_EXPORT

__all__ = ["ui_to_api"]

VIRTUAL = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
MUTED, BYPASSED = 2, 4
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
_UPLOAD_FLAGS = ("image_upload", "audio_upload", "video_upload")
_WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})

Slot = tuple[str, str, str, Any]  # (kind: value|control|filter|upload, input name, widget type, options/choices)


def _spec(entry: Mapping[str, Any], section: str, name: str) -> tuple[Any, dict[str, Any]]:
    spec = entry["input"][section][name]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0], options


def _ordered_inputs(entry: Mapping[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    found = []
    inputs = entry.get("input") or {}
    order = entry.get("input_order") or {}
    for section in ("required", "optional"):
        names = order.get(section) or list((inputs.get(section) or {}).keys())
        for name in names:
            if name in (inputs.get(section) or {}):
                kind, options = _spec(entry, section, name)
                found.append((name, kind, options))
    return found


def widget_slots(entry: Mapping[str, Any]) -> tuple[list[Slot], list[int]]:
    """The widgets_values layout of a class without upload values, and where an upload value may go."""
    slots: list[Slot] = []
    upload_after: list[int] = []
    for name, kind, options in _ordered_inputs(entry):
        choices = kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
        type_name = "COMBO" if choices is not None or kind == "COMBO" else str(kind)
        if type_name not in _WIDGET_TYPES or options.get("forceInput"):
            continue
        slots.append(("value", name, type_name, choices))
        control = options.get("control_after_generate")
        if type_name == "INT" and (control if control is not None else name in ("seed", "noise_seed")):
            slots.append(("control", name, "", None))
        elif type_name == "COMBO" and control:
            slots += [("control", name, "", None), ("filter", name, "", None)]
        if type_name == "COMBO" and any(options.get(flag) for flag in _UPLOAD_FLAGS):
            upload_after.append(len(slots))
    return slots, upload_after


def _fits(slot: Slot, value: Any, class_type: str) -> bool:
    kind, name, type_name, choices = slot
    if kind == "control":
        return value in CONTROL_VALUES
    if kind == "filter":
        return isinstance(value, str)
    if kind == "upload":
        return value is None or isinstance(value, str)
    if type_name == "INT":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if type_name == "FLOAT":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_name == "BOOLEAN":
        return isinstance(value, bool)
    if type_name == "STRING":
        return isinstance(value, str)
    # COMBO: a file or model list is the worker's (empty in the catalogue); any other list is fixed
    files = (
        (class_type, name) in MODEL_INPUTS
        or name in SELF_VALIDATED_INPUTS.get(class_type, ())
        or name in INPUT_FOLDER_INPUTS.get(class_type, ())
    )
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return False
    return files or not choices or value in choices


def _layouts(slots: list[Slot], upload_after: list[int]) -> list[list[Slot]]:
    """Every layout an upload widget allows: no value, a value after its combo, a value last."""
    if not upload_after:
        return [slots]
    layouts = []
    for choice in itertools.product(("none", "after", "end"), repeat=len(upload_after)):
        layout = list(slots)
        for where, after in sorted(zip(choice, upload_after, strict=True), key=lambda x: -x[1]):
            if where == "after":
                layout.insert(after, ("upload", "", "", None))
        layout += [("upload", "", "", None) for where in choice if where == "end"]
        if layout not in layouts:
            layouts.append(layout)
    return layouts


def map_widgets(class_type: str, entry: Mapping[str, Any], values: list[Any]) -> dict[str, Any] | str:
    """The widget inputs from ``widgets_values``, or why they cannot be told apart reliably."""
    slots, upload_after = widget_slots(entry)
    results: list[dict[str, Any]] = []
    for layout in _layouts(slots, upload_after):
        if len(layout) != len(values) or not all(_fits(s, v, class_type) for s, v in zip(layout, values, strict=True)):
            continue
        pairs = zip(layout, values, strict=True)
        mapped = {s[1]: (int(v) if s[2] == "INT" else v) for s, v in pairs if s[0] == "value"}
        if mapped not in results:
            results.append(mapped)
    if len(results) == 1:
        return results[0]
    expected = ", ".join(s[1] if s[0] == "value" else f"({s[0]} of {s[1]})" for s in slots) or "none"
    if not results:
        return (
            f"its {len(values)} widget values do not match the widgets of {class_type} in ComfyUI 0.3.64 "
            f"({expected}): saved by another version of the class?"
        )
    return f"its widget values fit the widgets of {class_type} ({expected}) in more than one way"


def _links(workflow: Mapping[str, Any]) -> dict[int, tuple[Any, int, Any, int, Any]]:
    links: dict[int, tuple[Any, int, Any, int, Any]] = {}
    for link in workflow.get("links") or []:
        if isinstance(link, list) and len(link) >= 6:
            links[link[0]] = (link[1], int(link[2]), link[3], int(link[4]), link[5])
        elif isinstance(link, dict) and "id" in link:
            links[link["id"]] = (
                link.get("origin_id"), int(link.get("origin_slot", 0)), link.get("target_id"),
                int(link.get("target_slot", 0)), link.get("type"),
            )
    return links


def _order(node_id: Any) -> tuple[int, int, str]:
    text = str(node_id)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _label(node: Mapping[str, Any]) -> str:
    title = node.get("title")
    named = f" {title!r}" if isinstance(title, str) and title else ""
    return f"node #{node.get('id')} ({node.get('type')}{named})"


class _Converter:
    def __init__(self, workflow: Mapping[str, Any], object_info: Mapping[str, Any], file: str) -> None:
        self.file = file
        self.object_info = object_info
        self.nodes = {n.get("id"): n for n in workflow.get("nodes") or [] if isinstance(n, dict)}
        self.links = _links(workflow)
        self.problems: list[str] = []

    def resolve(self, link_id: Any, seen: frozenset[Any] = frozenset()) -> tuple[str, Any] | None:
        """("link", [id, slot]) or ("value", v) for an input's link, or None when it resolves to nothing."""
        if link_id is None or link_id not in self.links or link_id in seen:
            return None
        origin_id, origin_slot, _, _, link_type = self.links[link_id]
        origin = self.nodes.get(origin_id)
        if origin is None:
            return ("link", [str(origin_id), origin_slot])  # a link to a missing node: reported by the graph check
        kind = origin.get("type")
        seen = seen | {link_id}
        if kind == "Reroute":
            inputs = origin.get("inputs") or [{}]
            return self.resolve(inputs[0].get("link"), seen)
        if kind == "PrimitiveNode":
            values = origin.get("widgets_values") or []
            return ("value", values[0]) if values else None
        if kind in VIRTUAL or origin.get("mode") == MUTED:
            return None
        if origin.get("mode") == BYPASSED:
            index = self._bypass_input(origin, origin_slot, link_type)
            if index is None:
                return None
            return self.resolve((origin.get("inputs") or [])[index].get("link"), seen)
        return ("link", [str(origin_id), origin_slot])

    @staticmethod
    def _bypass_input(node: Mapping[str, Any], slot: int, link_type: Any) -> int | None:
        inputs = node.get("inputs") or []
        outputs = node.get("outputs") or []
        out_type = outputs[slot].get("type") if slot < len(outputs) else link_type
        if out_type in ("*", "", None):
            return slot if slot < len(inputs) else (0 if inputs else None)

        def fits(a: Any, b: Any) -> bool:
            return a == b or "*" in (a, b) or (isinstance(a, str) and isinstance(b, str) and b in a.split(","))

        if slot < len(inputs) and fits(inputs[slot].get("type"), out_type):
            return slot
        for index, slot_info in enumerate(inputs):
            if slot_info.get("type") == out_type:
                return index
        for index, slot_info in enumerate(inputs):
            if fits(slot_info.get("type"), out_type):
                return index
        return None

    def convert(self) -> dict[str, Any]:
        graph: dict[str, Any] = {}
        for node_id, node in sorted(self.nodes.items(), key=lambda kv: _order(kv[0])):
            kind = node.get("type")
            if kind in VIRTUAL or node.get("mode") in (MUTED, BYPASSED):
                continue
            entry = self.object_info.get(str(kind))
            if not isinstance(entry, Mapping):
                self.problems.append(
                    f"{_label(node)}: class {kind!r} has no schema here (not in ComfyUI 0.3.64 core or the packs of "
                    f"reelforge/preview/catalogue/), so its widget values cannot be named: {HOW_TO_EXPORT}"
                )
                continue
            values = node.get("widgets_values")
            if isinstance(values, dict):
                self.problems.append(
                    f"{_label(node)}: its widget values are a mapping (a custom frontend): {HOW_TO_EXPORT}"
                )
                continue
            mapped = map_widgets(str(kind), entry, list(values or []))
            if isinstance(mapped, str):
                self.problems.append(f"{_label(node)}: {mapped}: {HOW_TO_EXPORT}")
                continue
            inputs: dict[str, Any] = {k: ({"__value__": v} if isinstance(v, list) else v) for k, v in mapped.items()}
            for slot in node.get("inputs") or []:
                if not isinstance(slot, dict) or slot.get("link") is None:
                    continue
                resolved = self.resolve(slot.get("link"))
                name = str(slot.get("name"))
                if resolved is None:
                    if not (slot.get("widget") and name in inputs):
                        inputs.pop(name, None)
                    continue
                how, value = resolved
                inputs[name] = value if how == "link" else ({"__value__": value} if isinstance(value, list) else value)
            title = node.get("title") if isinstance(node.get("title"), str) and node.get("title") else None
            graph[str(node_id)] = {
                "inputs": inputs,
                "class_type": str(kind),
                "_meta": {"title": title or str(entry.get("display_name") or kind)},
            }
        return graph


def ui_to_api(workflow: Mapping[str, Any], object_info: Mapping[str, Any], file: str) -> tuple[dict[str, Any], str]:
    """The API-format graph of a UI-format workflow and its JSON text (indent 2, as "Export (API)" writes it).

    Raises :class:`InitRefused` (every node that cannot be converted reliably, and why) otherwise."""
    definitions = workflow.get("definitions")
    extra = workflow.get("extra")
    if isinstance(definitions, dict) and definitions.get("subgraphs"):
        raise InitRefused(
            file, [f"the workflow uses subgraphs, which only the ComfyUI frontend can flatten: {HOW_TO_EXPORT}"]
        )
    if isinstance(extra, dict) and extra.get("groupNodes"):
        raise InitRefused(
            file, [f"the workflow uses group nodes, which only the ComfyUI frontend can expand: {HOW_TO_EXPORT}"]
        )
    converter = _Converter(workflow, object_info, file)
    graph = converter.convert()
    if converter.problems:
        raise InitRefused(file, converter.problems)
    # Inputs linked to nodes that were left out are dropped, as the frontend does.
    left_out = {str(i) for i in converter.nodes} - set(graph)
    for node in graph.values():
        for name, value in list(node["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and value[0] in left_out:
                del node["inputs"][name]
    return graph, json.dumps(graph, indent=2, ensure_ascii=False)
