"""ComfyUI 0.3.64's prompt validation for the preview worker.

The checks themselves (order, error types, messages, quirks) live in :mod:`reelforge.comfy.schema`, shared
with the offline / pre-queue validation of templates. This module feeds them the preview worker's node
registry: schemas with combo lists computed per request from the worker's folders, and the registry's custom
``VALIDATE_INPUTS`` functions (LoadImage's file check, ...).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from reelforge.comfy.schema import (
    ClassLookup,
    ClassSchema,
    ValidationOutcome,
    full_type_name,
    get_input_info,
    is_link,
    validate_node_input,
)
from reelforge.comfy.schema import validate_prompt as _validate_prompt
from reelforge.preview.registry import NodeClass, NodeRegistry, WorkerDirs

__all__ = [
    "ValidationOutcome",
    "full_type_name",
    "get_input_info",
    "is_link",
    "registry_lookup",
    "validate_node_input",
    "validate_prompt",
]


def _class_schema(cls: NodeClass, dirs: WorkerDirs) -> ClassSchema:
    custom = cls.validate_inputs

    def input_types() -> dict[str, Any]:
        return dict(cls.object_info(dirs).get("input", {}))

    return ClassSchema(
        name=cls.name,
        info=cls.schema,
        input_types=input_types,
        validated_inputs=cls.validated_inputs if custom is not None else frozenset(),
        validate_inputs=partial(custom, dirs) if custom is not None else None,
    )


def registry_lookup(registry: NodeRegistry, dirs: WorkerDirs) -> ClassLookup:
    """A class lookup for :func:`reelforge.comfy.schema.validate_prompt` over a preview registry."""

    def lookup(name: str) -> ClassSchema | None:
        cls = registry.get(name)
        return None if cls is None else _class_schema(cls, dirs)

    return lookup


def validate_prompt(
    prompt: dict[str, Any],
    registry: NodeRegistry,
    dirs: WorkerDirs,
    partial_targets: list[str] | None = None,
) -> ValidationOutcome:
    """Validate an API-format graph exactly like ComfyUI 0.3.64; never raises for a bad graph."""
    return _validate_prompt(prompt, registry_lookup(registry, dirs), partial_targets)
