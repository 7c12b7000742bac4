"""Template errors: every problem found at once, each naming template, parameter, node title and input."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from reelforge.errors import InputRejected


class Problem(BaseModel):
    """One thing wrong with a template, its manifest, a binding, or the bound graph on a worker.

    ``error_type`` is ComfyUI's error type (``value_not_in_list``, ...) for problems found by ComfyUI's
    validation rules, and empty for the engine's own checks.
    """

    model_config = ConfigDict(frozen=True)

    template: str
    message: str
    parameter: str | None = None
    node_title: str | None = None
    input: str | None = None
    error_type: str = ""
    node_id: str | None = None

    def __str__(self) -> str:
        head = f"template {self.template!r}"
        if self.parameter:
            head += f", parameter {self.parameter!r}"
        where = []
        if self.node_title is not None:
            where.append(f"node {self.node_title!r}")
        elif self.node_id is not None:
            where.append(f"node #{self.node_id}")
        if self.input:
            where.append(f"input {self.input!r}")
        if where:
            head += f" ({', '.join(where)})"
        text = f"{self.error_type}: {self.message}" if self.error_type else self.message
        return f"{head}: {text}"


class TemplateError(ValueError):
    """A template failed to load, bind or validate; ``problems`` lists every problem found.

    ``str()`` is one line per problem.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "template error")

    @property
    def templates(self) -> list[str]:
        return sorted({p.template for p in self.problems})


class InitRefused(InputRejected):
    """``reelforge templates init`` found the file unusable or its inferences ambiguous; nothing was written.

    ``file`` is the file given; ``problems`` one line each, every line naming the node (``node #4 (KSampler
    'Sampler')``) where one is involved, and how to resolve it. ``str()`` is the lines, each prefixed by the file.
    """

    def __init__(self, file: str, problems: Iterable[str]) -> None:
        self.file = file
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(f"{file}: {p}" for p in self.problems) or f"{file}: refused")
