"""Pydantic models of a template manifest (``workflows/NAME.manifest.yaml``, see docs/templates.md).

The models check shapes only; rules that relate fields to each other or to the graph (a default fits its
type, ``min`` only on numbers, titles exist, ...) are checked by :mod:`reelforge.templates.template`, which
reports every problem at once.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ParamType = Literal["string", "int", "float", "bool", "choice", "image", "audio", "video", "folder", "model"]
TemplateKind = Literal["image", "video", "audio", "lora", "upscale"]
OutputKind = Literal["image", "video", "audio", "lora", "text"]

PARAM_TYPES: tuple[str, ...] = (
    "string", "int", "float", "bool", "choice", "image", "audio", "video", "folder", "model",
)
TEMPLATE_KINDS: tuple[str, ...] = ("image", "video", "audio", "lora", "upscale")
OUTPUT_KINDS: tuple[str, ...] = ("image", "video", "audio", "lora", "text")


class Target(BaseModel):
    """One node input a parameter sets: node title and input name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str
    input: str


class Parameter(BaseModel):
    """A value callers bind by ``name``; set on ``node``/``input`` or on every entry of ``targets``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: ParamType
    node: str | None = None
    input: str | None = None
    targets: list[Target] | None = None
    default: Any = None
    description: str = ""
    min: int | float | None = None
    max: int | float | None = None
    choices: list[Any] | None = None
    folder: str | None = None  # for type: model, the model folder key

    @property
    def has_default(self) -> bool:
        """A parameter without ``default`` is required (``default: null`` counts as a default of None)."""
        return "default" in self.model_fields_set

    @property
    def required(self) -> bool:
        return not self.has_default

    @property
    def all_targets(self) -> list[Target]:
        """Every (node, input) the value goes to."""
        if self.targets is not None:
            return list(self.targets)
        if self.node is not None and self.input is not None:
            return [Target(node=self.node, input=self.input)]
        return []


class Output(BaseModel):
    """An output node of the template (by title) and what it produces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str
    kind: OutputKind


class ModelEntry(BaseModel):
    """A model file the graph loads: ComfyUI folder key and file name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: str
    name: str


class CustomNode(BaseModel):
    """A node class outside ComfyUI core and the pack (deployments/comfyui/lock.yaml) that provides it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_: str = Field(alias="class")
    pack: str


class Manifest(BaseModel):
    """The whole manifest."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: TemplateKind
    description: str = ""
    parameters: list[Parameter] = Field(default_factory=list)
    outputs: list[Output] = Field(default_factory=list)
    models: list[ModelEntry] = Field(default_factory=list)
    custom_nodes: list[CustomNode] = Field(default_factory=list)

    def canonical(self) -> dict[str, Any]:
        """The manifest as plain data (aliases, only fields that were given), for hashing."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
