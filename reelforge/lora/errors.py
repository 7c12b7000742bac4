"""LoRA errors: validation, the store's LoRA records, and the external trainer.

```
LoraError                    any LoRA failure; .path (the file or folder) .tensor (the first bad tensor)
├── LoraInvalid              the file failed validation; .problems (every one found), .report (None when the
│   │                        file could not be parsed at all)
│   └── LoraUnreadable       not a safetensors file (the header does not parse, truncated, empty, missing)
├── LoraNotFound             no stored LoRA for that character (or that version); .slug .version
├── LoraRecordError          a stored record that cannot be read or does not fit its key; .key
├── LoraDatasetError         a training folder a trainer cannot use (no images, images without captions)
└── LoraTrainingError        the external trainer failed; .command .returncode .output_tail .log_path
    ├── TrainerFailed        it exited non-zero (the tail of its output is in the message)
    ├── TrainerTimeout       it ran past its timeout and was killed; .timeout_s
    ├── TrainerCancelled     the caller asked it to stop
    └── TrainerNoOutput      it exited 0 but wrote no .safetensors file
```

All are permanent for a retry policy: the same file, record or command fails the same way again (a trainer that
died of a GPU fault is the exception a person judges from the log; nothing here guesses it). Every keyword
argument has a default, so the errors pickle across a process pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only named in annotations
    from reelforge.lora.report import LoraProblem, LoraReport

__all__ = [
    "LoraDatasetError",
    "LoraError",
    "LoraInvalid",
    "LoraNotFound",
    "LoraRecordError",
    "LoraTrainingError",
    "LoraUnreadable",
    "TrainerCancelled",
    "TrainerFailed",
    "TrainerNoOutput",
    "TrainerTimeout",
]


class LoraError(Exception):
    """Any LoRA failure; ``path`` is the file (or folder) and ``tensor`` the first bad tensor, when known."""

    def __init__(self, message: str, *, path: str | None = None, tensor: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.tensor = tensor

    def __str__(self) -> str:
        return self.message


class LoraInvalid(LoraError):
    """A LoRA file failed validation. ``str()`` is one line per problem, each naming the file and tensor."""

    def __init__(
        self,
        message: str = "",
        *,
        path: str | None = None,
        tensor: str | None = None,
        problems: Sequence[LoraProblem] = (),
        report: LoraReport | None = None,
    ) -> None:
        self.problems: list[LoraProblem] = list(problems)
        self.report = report
        if not message:
            message = "\n".join(str(p) for p in self.problems) or f"{path}: invalid LoRA file"
        if tensor is None:
            tensor = next((p.tensor for p in self.problems if p.tensor is not None), None)
        super().__init__(message, path=path, tensor=tensor)

    @property
    def codes(self) -> list[str]:
        """The problems' codes in order (``non_finite``, ``rank_mismatch``, ...)."""
        return [p.code for p in self.problems]


class LoraUnreadable(LoraInvalid):
    """The file is not a safetensors file at all (missing, empty, not JSON-headed, truncated)."""


class LoraNotFound(LoraError, LookupError):
    """No stored LoRA record for ``slug`` (or for its ``version``)."""

    def __init__(self, message: str, *, slug: str | None = None, version: int | None = None) -> None:
        super().__init__(message)
        self.slug = slug
        self.version = version


class LoraRecordError(LoraError):
    """A stored ``record.json`` that does not parse, or whose contents disagree with its key."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class LoraDatasetError(LoraError):
    """A dataset folder a trainer cannot use; ``problems`` lists every reason (one line each in ``str()``)."""

    def __init__(self, message: str = "", *, path: str | None = None, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        super().__init__(message or "\n".join(f"{path}: {p}" for p in self.problems), path=path)


class LoraTrainingError(LoraError):
    """The external trainer failed. ``output_tail`` is the last lines it printed; ``log_path`` the whole log."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        command: Sequence[str] = (),
        returncode: int | None = None,
        output_tail: str = "",
        log_path: str | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.command = list(command)
        self.returncode = returncode
        self.output_tail = output_tail
        self.log_path = log_path


class TrainerFailed(LoraTrainingError):
    """The trainer exited with a non-zero status."""


class TrainerTimeout(LoraTrainingError):
    """The trainer ran past ``timeout_s`` and was killed (its whole process group)."""

    def __init__(
        self,
        message: str,
        *,
        timeout_s: float | None = None,
        path: str | None = None,
        command: Sequence[str] = (),
        output_tail: str = "",
        log_path: str | None = None,
    ) -> None:
        super().__init__(message, path=path, command=command, output_tail=output_tail, log_path=log_path)
        self.timeout_s = timeout_s


class TrainerCancelled(LoraTrainingError):
    """The caller's cancel event was set; the trainer was stopped."""


class TrainerNoOutput(LoraTrainingError):
    """The trainer exited 0 but no ``.safetensors`` file appeared in the output folder."""
