"""ComfyUI 0.3.64's prompt validation (``execution.validate_prompt`` / ``validate_inputs``), over schemas.

One implementation serves two callers:

* :func:`validate_graph` checks a graph against a worker's ``/object_info`` answer (or the offline catalogue)
  and its model lists, before anything is queued;
* ``reelforge.preview.validation`` feeds it the preview worker's node registry, adding the registry's custom
  ``VALIDATE_INPUTS`` functions and dynamic combo lists.

Same order of checks, same error JSON. Reproduced literally, quirks included:

* the graph is scanned node by node: a node without ``class_type`` or with an unknown class stops everything
  with ``invalid_prompt`` (details ``Node ID '#<id>'``), even when that node feeds no output;
* only output nodes (filtered by ``partial_targets``) and their ancestors through links are validated;
* links are evaluated with plain Python indexing, so a link to an absent node is a ``KeyError`` (``'99'``), an
  integer node id a ``KeyError`` (``1``), a bad slot ``IndexError: tuple index out of range``, a string slot a
  ``TypeError``; these surface as ``exception_during_validation`` on an output, or as
  ``exception_during_inner_validation`` recorded under the upstream node that raised;
* widget values are coerced in place (``int()``, ``float()``, ``str()``, ``bool()``); ``coerced`` is the graph
  that goes to history and execution;
* an upstream node's errors are listed under its own id with ``dependent_outputs``; downstream nodes that are
  invalid only because of it are not listed; every failing output is appended to the ``dependent_outputs`` of
  every failing node validated so far (ComfyUI iterates its whole ``validated`` map for each failing output);
* the top-level ``details`` of ``prompt_outputs_failed_validation`` joins only the output nodes' own errors;
* inputs a node checks itself (``VALIDATE_INPUTS``: LoadImage's file, LoadAudio's file, ...) skip the built-in
  min/max/combo checks. Without the node's code (``validate_graph``), those inputs are not checked at all:
  input files are uploaded right before a prompt is queued, after validation.

Where ComfyUI iterates a ``set`` (hash order, varies per process) this module uses the graph / schema order.
"""

from __future__ import annotations

import copy
import sys
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reelforge.comfy.graph import MODEL_INPUTS

# Inputs whose class has a VALIDATE_INPUTS function for them in ComfyUI 0.3.64 (built-in checks skipped).
# They name files in the worker's input/output folders, which are uploaded after validation.
SELF_VALIDATED_INPUTS: dict[str, frozenset[str]] = {
    "LoadImage": frozenset({"image"}),
    "LoadImageMask": frozenset({"image"}),
    "LoadImageOutput": frozenset({"image"}),
    "LoadAudio": frozenset({"audio"}),
    "LoadVideo": frozenset({"file"}),
    "LoadLatent": frozenset({"latent"}),  # "Invalid latent file: ..." (nodes.py LoadLatent.VALIDATE_INPUTS)
    "WebcamCapture": frozenset({"image"}),  # LoadImage's VALIDATE_INPUTS, inherited
}

# Input-folder combos (subfolders of the worker's input folder): like files, they arrive with the job.
INPUT_FOLDER_INPUTS: dict[str, frozenset[str]] = {
    "LoadImageSetFromFolderNode": frozenset({"folder"}),
    "LoadImageTextSetFromFolderNode": frozenset({"folder"}),
}


@dataclass
class ValidationOutcome:
    """Result of ``validate_prompt``.

    ``ok`` is ComfyUI's first return value (True = queue it, possibly with non-empty ``node_errors``);
    ``error`` is the top-level error dict (empty when ok); ``outputs_to_execute`` the outputs that survived;
    ``coerced`` the graph with coerced widget values (a deep copy; the caller's dict is not touched).
    """

    ok: bool
    error: dict[str, Any] = field(default_factory=dict)
    node_errors: dict[str, Any] = field(default_factory=dict)
    outputs_to_execute: list[str] = field(default_factory=list)
    coerced: dict[str, Any] = field(default_factory=dict)

    def response_body(self) -> dict[str, Any]:
        """The 400 body ComfyUI sends: ``{"error": ..., "node_errors": ...}``."""
        return {"error": self.error, "node_errors": self.node_errors}

    @property
    def clean(self) -> bool:
        """Every output validated: queued with nothing dropped."""
        return self.ok and not self.node_errors


ValidateFn = Callable[[dict[str, Any]], "str | bool"]


@dataclass
class ClassSchema:
    """What validation needs of one node class.

    ``info`` is its ``/object_info`` entry; ``input_types`` (optional) computes the ``input`` part at validation
    time (ComfyUI calls ``INPUT_TYPES()`` per request, so file lists are fresh). ``validated_inputs`` are the
    inputs the class validates itself (built-in min/max/combo checks skipped); ``validate_inputs`` is that
    function, called with those inputs, or None when it is not available here.
    """

    name: str
    info: Mapping[str, Any]
    input_types: Callable[[], dict[str, Any]] | None = None
    validated_inputs: frozenset[str] = frozenset()
    validate_inputs: ValidateFn | None = None

    @property
    def output_node(self) -> bool:
        return bool(self.info.get("output_node"))

    @property
    def output_types(self) -> list[Any]:
        return list(self.info.get("output", []))

    def inputs(self) -> dict[str, Any]:
        if self.input_types is not None:
            return self.input_types()
        return dict(self.info.get("input") or {})


ClassLookup = Callable[[str], "ClassSchema | None"]

_Result = tuple[bool, list[dict[str, Any]], str]


def full_type_name(klass: type) -> str:
    """ComfyUI's ``full_type_name``: qualified name, without ``builtins.``."""
    module = klass.__module__
    if module == "builtins":
        return klass.__qualname__
    return module + "." + klass.__qualname__


def get_input_info(class_inputs: Mapping[str, Any], input_name: str) -> tuple[Any, str | None, dict[str, Any] | None]:
    """(input_type, category, extra_info) like ComfyUI's ``get_input_info``; (None, None, None) if unknown."""
    for category in ("required", "optional", "hidden"):
        section = class_inputs.get(category) or {}
        if input_name in section:
            info = section[input_name]
            if isinstance(info, str):  # hidden inputs may be given as a bare type string
                return info, category, {}
            input_type = info[0]
            extra = info[1] if len(info) > 1 and isinstance(info[1], dict) else {}
            return input_type, category, extra
    return None, None, None


def validate_node_input(received_type: Any, input_type: Any, strict: bool = False) -> bool:
    """ComfyUI's ``comfy_execution.validation.validate_node_input``."""
    if not received_type != input_type:
        return True
    if received_type == "*" or input_type == "*":
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received_types = {t.strip() for t in received_type.split(",")}
    input_types = {t.strip() for t in input_type.split(",")}
    if strict:
        return received_types.issubset(input_types)
    return len(received_types.intersection(input_types)) > 0


def is_link(obj: Any) -> bool:
    """ComfyUI's ``is_link``: ``[str, int|float]``."""
    if not isinstance(obj, list) or len(obj) != 2:
        return False
    if not isinstance(obj[0], str):
        return False
    return isinstance(obj[1], (int, float))  # bool is an int here too, as in ComfyUI


class _Validator:
    def __init__(
        self, prompt: dict[str, Any], lookup: ClassLookup, unchecked: Collection[tuple[str, str]] = ()
    ) -> None:
        self.prompt = prompt
        self.lookup = lookup
        self.unchecked = frozenset(unchecked)
        self.validated: dict[str, _Result] = {}
        self._classes: dict[str, ClassSchema] = {}
        self._inputs_cache: dict[str, dict[str, Any]] = {}

    def node_class(self, class_type: str) -> ClassSchema:
        cls = self._classes.get(class_type)
        if cls is None:
            found = self.lookup(class_type)
            if found is None:  # validate_prompt checked every node already; mirror NODE_CLASS_MAPPINGS[...]
                raise KeyError(class_type)
            self._classes[class_type] = cls = found
        return cls

    def class_inputs(self, cls: ClassSchema) -> dict[str, Any]:
        """INPUT_TYPES() with the combo lists computed now (once per class per validation)."""
        cached = self._inputs_cache.get(cls.name)
        if cached is None:
            cached = cls.inputs()
            self._inputs_cache[cls.name] = cached
        return cached

    def validate_inputs(self, unique_id: Any) -> _Result:
        if unique_id in self.validated:
            return self.validated[unique_id]

        prompt = self.prompt
        inputs = prompt[unique_id]["inputs"]
        class_type = prompt[unique_id]["class_type"]
        obj_class = self.node_class(class_type)

        class_inputs = self.class_inputs(obj_class)
        valid_inputs = list(class_inputs.get("required") or {})
        valid_inputs += [x for x in (class_inputs.get("optional") or {}) if x not in valid_inputs]

        errors: list[dict[str, Any]] = []
        valid = True

        validate_function_inputs: set[str] = set(obj_class.validated_inputs)
        # inputs whose built-in checks are skipped: the class validates them, or the caller said so
        skip_builtin = validate_function_inputs | {i for n, i in self.unchecked if n == unique_id}

        for x in valid_inputs:
            input_type, input_category, extra_info = get_input_info(class_inputs, x)
            assert extra_info is not None
            if x not in inputs:
                if input_category == "required":
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": f"{x}",
                            "extra_info": {"input_name": x},
                        }
                    )
                continue

            val = inputs[x]
            info = [input_type, extra_info]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        {
                            "type": "bad_linked_input",
                            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            "details": f"{x}",
                            "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                        }
                    )
                    continue

                o_id = val[0]
                o_class_type = prompt[o_id]["class_type"]
                r = tuple(self.node_class(o_class_type).output_types)
                received_type = r[val[1]]
                if not validate_node_input(received_type, input_type):
                    details = f"{x}, received_type({received_type}) mismatch input_type({input_type})"
                    errors.append(
                        {
                            "type": "return_type_mismatch",
                            "message": "Return type mismatch between linked nodes",
                            "details": details,
                            "extra_info": {
                                "input_name": x,
                                "input_config": info,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        }
                    )
                    continue
                try:
                    res = self.validate_inputs(o_id)
                    if res[0] is False:
                        # the upstream result is already recorded in ``validated[o_id]``
                        valid = False
                        continue
                except Exception as ex:
                    typ, _, tb = sys.exc_info()
                    valid = False
                    assert typ is not None
                    reasons = [
                        {
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": str(ex),
                            "extra_info": {
                                "input_name": x,
                                "input_config": info,
                                "exception_message": str(ex),
                                "exception_type": full_type_name(typ),
                                "traceback": traceback.format_tb(tb),
                                "linked_node": val,
                            },
                        }
                    ]
                    self.validated[o_id] = (False, reasons, o_id)
                    continue
            else:
                try:
                    # a literal list is passed wrapped as {"__value__": [...]} (a bare list is a link)
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                        inputs[x] = val
                    if input_type == "INT":
                        val = int(val)
                        inputs[x] = val
                    if input_type == "FLOAT":
                        val = float(val)
                        inputs[x] = val
                    if input_type == "STRING":
                        val = str(val)
                        inputs[x] = val
                    if input_type == "BOOLEAN":
                        val = bool(val)
                        inputs[x] = val
                except Exception as ex:
                    errors.append(
                        {
                            "type": "invalid_input_type",
                            "message": f"Failed to convert an input value to a {input_type} value",
                            "details": f"{x}, {val}, {ex}",
                            "extra_info": {
                                "input_name": x,
                                "input_config": info,
                                "received_value": val,
                                "exception_message": str(ex),
                            },
                        }
                    )
                    continue

                if x not in skip_builtin:
                    if "min" in extra_info and val < extra_info["min"]:
                        errors.append(
                            {
                                "type": "value_smaller_than_min",
                                "message": "Value {} smaller than min of {}".format(val, extra_info["min"]),
                                "details": f"{x}",
                                "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                            }
                        )
                        continue
                    if "max" in extra_info and val > extra_info["max"]:
                        errors.append(
                            {
                                "type": "value_bigger_than_max",
                                "message": "Value {} bigger than max of {}".format(val, extra_info["max"]),
                                "details": f"{x}",
                                "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                            }
                        )
                        continue

                    if isinstance(input_type, list) or input_type == "COMBO":
                        if input_type == "COMBO":
                            combo_options = extra_info.get("options", [])
                        else:
                            combo_options = input_type
                        if val not in combo_options:
                            input_config: Any = info
                            # gigantic lists (e.g. scanned model paths) are not echoed back
                            if len(combo_options) > 20:
                                list_info = f"(list of length {len(combo_options)})"
                                input_config = None
                            else:
                                list_info = str(combo_options)
                            errors.append(
                                {
                                    "type": "value_not_in_list",
                                    "message": "Value not in list",
                                    "details": f"{x}: '{val}' not in {list_info}",
                                    "extra_info": {
                                        "input_name": x,
                                        "input_config": input_config,
                                        "received_value": val,
                                    },
                                }
                            )
                            continue

        if obj_class.validate_inputs is not None and validate_function_inputs:
            input_filtered: dict[str, Any] = {}
            for x in inputs:
                _, category, _ = get_input_info(class_inputs, x)
                if category is None or x not in validate_function_inputs:
                    continue
                value = inputs[x]
                # links are not resolved during validation: the function sees None (ComfyUI's mark_missing)
                input_filtered[x] = None if is_link(value) else value
            # ComfyUI calls VALIDATE_INPUTS(**present inputs it declares); a declared argument that is absent
            # from the prompt makes that call raise TypeError (surfacing as an exception during validation).
            missing = [n for n in sorted(validate_function_inputs) if n not in input_filtered]
            if missing:
                names = [f"'{n}'" for n in missing]
                listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
                plural = "argument" if len(names) == 1 else "arguments"
                head = f"{class_type}.VALIDATE_INPUTS() missing {len(names)}"
                raise TypeError(f"{head} required positional {plural}: {listed}")
            ret = obj_class.validate_inputs(input_filtered)
            for x in input_filtered:
                if ret is not True:
                    details = f"{x}"
                    if ret is not False:
                        details += f" - {ret!s}"
                    errors.append(
                        {
                            "type": "custom_validation_failed",
                            "message": "Custom validation failed for node",
                            "details": details,
                            "extra_info": {"input_name": x},
                        }
                    )

        result: _Result
        if len(errors) > 0 or valid is not True:
            result = (False, errors, unique_id)
        else:
            result = (True, [], unique_id)
        self.validated[unique_id] = result
        return result


def _invalid_prompt(message: str, node_id: str, graph: dict[str, Any]) -> ValidationOutcome:
    return ValidationOutcome(
        ok=False,
        coerced=graph,
        error={
            "type": "invalid_prompt",
            "message": message,
            "details": f"Node ID '#{node_id}'",
            "extra_info": {},
        },
    )


def validate_prompt(
    prompt: Mapping[str, Any],
    lookup: ClassLookup,
    partial_targets: list[str] | None = None,
    *,
    unchecked: Collection[tuple[str, str]] = (),
) -> ValidationOutcome:
    """Validate an API-format graph exactly like ComfyUI 0.3.64; never raises for a bad graph.

    ``lookup`` gives the schema of a class name, or None when the worker does not know the class.
    ``unchecked`` names (node id, input) pairs whose min/max/combo checks are skipped (not ComfyUI: used for
    template inputs whose value is only known when a job binds it).
    """
    graph: dict[str, Any] = copy.deepcopy(dict(prompt))
    outputs: list[str] = []
    known: dict[str, ClassSchema] = {}
    for x in graph:
        node_def = graph[x]
        if not isinstance(node_def, dict) or "class_type" not in node_def:
            return _invalid_prompt("Cannot execute because a node is missing the class_type property.", x, graph)
        class_type = node_def["class_type"]
        cls = known.get(class_type) if isinstance(class_type, str) else None
        if cls is None and isinstance(class_type, str):
            cls = lookup(class_type)
            if cls is not None:
                known[class_type] = cls
        if cls is None:
            return _invalid_prompt(f"Cannot execute because node {class_type} does not exist.", x, graph)
        if cls.output_node and (partial_targets is None or x in partial_targets) and x not in outputs:
            outputs.append(x)

    if len(outputs) == 0:
        return ValidationOutcome(
            ok=False,
            error={
                "type": "prompt_no_outputs",
                "message": "Prompt has no outputs",
                "details": "",
                "extra_info": {},
            },
            coerced=graph,
        )

    validator = _Validator(graph, lambda name: known.get(name) or lookup(name), unchecked)
    good_outputs: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for o in outputs:
        valid = False
        reasons: list[dict[str, Any]] = []
        try:
            m = validator.validate_inputs(o)
            valid = m[0]
            reasons = m[1]
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            assert typ is not None
            valid = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {
                        "exception_type": full_type_name(typ),
                        "traceback": traceback.format_tb(tb),
                    },
                }
            ]
            validator.validated[o] = (False, reasons, o)

        if valid is True:
            good_outputs.append(o)
            continue
        failed.append((o, reasons))
        for node_id, result in validator.validated.items():
            node_valid, node_reasons = result[0], result[1]
            # downstream nodes invalid only because of an upstream error carry no reasons: not reported
            if node_valid is not True and len(node_reasons) > 0:
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": graph[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(o)

    if len(good_outputs) == 0:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failed for e in errs)
        return ValidationOutcome(
            ok=False,
            error={
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": details,
                "extra_info": {},
            },
            node_errors=node_errors,
            outputs_to_execute=[],
            coerced=graph,
        )
    return ValidationOutcome(ok=True, node_errors=node_errors, outputs_to_execute=good_outputs, coerced=graph)


# ------------------------------------------------------------------------------------- over /object_info


def with_model_lists(object_info: Mapping[str, Any], models: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """A copy of ``object_info`` whose model-file combos (``graph.MODEL_INPUTS``) list ``models[folder]``.

    ComfyUI fills those combos from the worker's model folders; a catalogue captured on a worker without
    models has them empty. The files of ``models`` are added to what the entry lists already (built-in
    entries such as VAELoader's ``pixel_space`` stay). A folder absent from ``models`` adds nothing.
    """
    info: dict[str, Any] = dict(object_info)
    for (class_name, input_name), folder in MODEL_INPUTS.items():
        entry = info.get(class_name)
        if not isinstance(entry, Mapping) or folder not in models:
            continue
        files = [str(f) for f in models[folder]]
        entry = copy.deepcopy(dict(entry))
        for section in ("required", "optional"):
            spec = (entry.get("input") or {}).get(section, {}).get(input_name)
            if not isinstance(spec, list) or not spec:
                continue
            if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
                current = list(spec[1].get("options") or [])
                spec[1]["options"] = current + [f for f in files if f not in current]
            elif isinstance(spec[0], list):
                spec[0] = spec[0] + [f for f in files if f not in spec[0]]
        info[class_name] = entry
    return info


def object_info_lookup(
    object_info: Mapping[str, Any],
    *,
    skip: Mapping[str, Iterable[str]] | None = None,
) -> ClassLookup:
    """A class lookup over an ``/object_info`` dict, for :func:`validate_prompt`.

    ``skip`` names inputs, per class, that validation leaves to the node (ComfyUI's VALIDATE_INPUTS rule,
    default :data:`SELF_VALIDATED_INPUTS`): their built-in min/max/combo checks are skipped.
    """
    skipped = SELF_VALIDATED_INPUTS if skip is None else skip

    def lookup(name: str) -> ClassSchema | None:
        entry = object_info.get(name)
        if not isinstance(entry, Mapping):
            return None
        return ClassSchema(name=name, info=entry, validated_inputs=frozenset(skipped.get(name, ())))

    return lookup


def validate_graph(
    graph: Mapping[str, Any],
    object_info: Mapping[str, Any],
    models: Mapping[str, Iterable[str]] | None = None,
    *,
    partial_targets: list[str] | None = None,
    check_input_folders: bool = False,
    unchecked: Collection[tuple[str, str]] = (),
) -> ValidationOutcome:
    """Validate ``graph`` as a worker with this ``/object_info`` (and these model files) would, before queueing.

    ``models`` maps a model folder key to its files (``GET /models/<folder>``); when given, loader combos list
    those files (see :func:`with_model_lists`), so a missing model file is ComfyUI's ``value_not_in_list``.
    Files named by LoadImage / LoadAudio / LoadVideo are not checked (they are uploaded after validation), nor,
    unless ``check_input_folders``, the input subfolders of the dataset loaders.
    """
    info = with_model_lists(object_info, models) if models is not None else object_info
    skip: dict[str, frozenset[str]] = dict(SELF_VALIDATED_INPUTS)
    if not check_input_folders:
        skip.update(INPUT_FOLDER_INPUTS)
    return validate_prompt(graph, object_info_lookup(info, skip=skip), partial_targets, unchecked=unchecked)
