"""Config files for trainers outside ComfyUI, their command lines and their progress lines (pure).

Two formats (docs/lora.md lists every field):

* ``ai-toolkit`` (ostris/ai-toolkit, ``python run.py <config.yaml>``): one YAML job, ``config.process[0]`` of
  type ``sd_trainer``; the final file is ``<output>/<name>/<name>.safetensors``. Its progress bar is
  ``<name>:  12%|...| 240/2000 [...]``.
* ``kohya`` (kohya-ss/sd-scripts, ``accelerate launch sdxl_train_network.py --config_file <config.toml>`` or
  ``flux_train_network.py``): a TOML of command-line arguments plus a dataset TOML it points at
  (``dataset_config``); the final file is ``<output>/<name>.safetensors``. Its bar is ``steps:  12%|...| 12/100``.

``extra`` settings are merged over the generated ones (nested tables key by key), so a studio can add what only
it knows (``clip_l``/``t5xxl``/``ae`` paths for Flux in kohya, ``quantize``, sampling prompts, ...). Its
``process`` table goes into ai-toolkit's ``config.process[0]``, its ``dataset`` table into kohya's dataset TOML.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from reelforge.lora.records import TrainingConfig
from reelforge.lora.report import LoraFamily

__all__ = [
    "SaveDtype",
    "TrainJob",
    "TrainerFormat",
    "ai_toolkit_config",
    "deep_merge",
    "expand_command",
    "expected_output",
    "kohya_config",
    "parse_progress",
    "progress_patterns",
    "toml_dumps",
]

TrainerFormat = Literal["ai-toolkit", "kohya"]
SaveDtype = Literal["bf16", "fp16", "fp32"]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class TrainJob:
    """One training run: where the data is, where the result goes, how to train, for which model family."""

    name: str  # the output file's stem
    dataset: Path
    output: Path
    config: TrainingConfig
    family: LoraFamily
    save_dtype: SaveDtype = "bf16"

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or ".." in self.name:
            raise ValueError(f"training name {self.name!r}: letters, digits, '.', '-', '_' (a file stem)")


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``; tables merge key by key, anything else (lists too) is replaced."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _alpha(config: TrainingConfig) -> float | int:
    alpha = config.alpha if config.alpha is not None else config.rank
    return int(alpha) if float(alpha).is_integer() else alpha


def ai_toolkit_config(job: TrainJob, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ai-toolkit job (``config/examples/train_lora_flux_24gb.yaml`` shape) for ``job``."""
    c = job.config
    flux = job.family == "flux"
    model: dict[str, Any] = {"name_or_path": c.base_model}
    if flux:
        model.update({"is_flux": True, "quantize": True})
    elif job.family == "sdxl":
        model["is_xl"] = True
    process: dict[str, Any] = {
        "type": "sd_trainer",
        "training_folder": str(job.output),
        "device": "cuda:0",
        "network": {"type": "lora", "linear": c.rank, "linear_alpha": _alpha(c)},
        "save": {
            "dtype": {"bf16": "bf16", "fp16": "float16", "fp32": "float32"}[job.save_dtype],
            "save_every": c.steps,
            "max_step_saves_to_keep": 1,
        },
        "datasets": [
            {
                "folder_path": str(job.dataset),
                "caption_ext": "txt",
                "caption_dropout_rate": 0.05,
                "cache_latents_to_disk": True,
                "resolution": [c.resolution],
            }
        ],
        "train": {
            "batch_size": c.batch_size,
            "steps": c.steps,
            "gradient_accumulation_steps": 1,
            "train_unet": True,
            "train_text_encoder": False,
            "gradient_checkpointing": True,
            "noise_scheduler": "flowmatch" if flux else "ddpm",
            "optimizer": c.optimizer or "adamw8bit",
            "lr": c.learning_rate,
            "dtype": "bf16",
            "disable_sampling": True,  # the test stage renders with the stored LoRA instead
        },
        "model": model,
    }  # no seed: ai-toolkit's example configs have none for training (only sample.seed, unused here)
    if c.trigger_word:
        process["trigger_word"] = c.trigger_word
    extra = dict(extra or {})
    process_extra = extra.pop("process", None)
    if isinstance(process_extra, Mapping):  # nearly every setting lives in the one process: merged into it
        process = deep_merge(process, process_extra)
    document: dict[str, Any] = {
        "job": "extension",
        "config": {"name": job.name, "process": [process]},
        "meta": {"name": "[name]", "version": "1.0"},
    }
    return deep_merge(document, extra)


def kohya_config(
    job: TrainJob, dataset_config: Path, extra: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training arguments for ``--config_file``, the dataset config) in sd-scripts' TOML shapes.

    ``extra`` is merged into the training arguments; a ``dataset`` table in it into the dataset config.
    """
    c = job.config
    flux = job.family == "flux"
    args: dict[str, Any] = {
        "pretrained_model_name_or_path": c.base_model,
        "dataset_config": str(dataset_config),
        "output_dir": str(job.output),
        "output_name": job.name,
        "save_model_as": "safetensors",
        "network_module": "networks.lora_flux" if flux else "networks.lora",
        "network_dim": c.rank,
        "network_alpha": _alpha(c),
        "network_train_unet_only": True,
        "learning_rate": c.learning_rate,
        "max_train_steps": c.steps,
        "optimizer_type": c.optimizer or "AdamW8bit",
        "mixed_precision": "bf16",
        "save_precision": {"bf16": "bf16", "fp16": "fp16", "fp32": "float"}[job.save_dtype],
        "seed": c.seed,
        "gradient_checkpointing": True,
        "cache_latents": True,
        "sdpa": True,
    }
    if flux:  # sd-scripts' recommended Flux settings (README of flux_train_network.py)
        args.update(
            {
                "timestep_sampling": "shift",
                "discrete_flow_shift": 3.1582,
                "model_prediction_type": "raw",
                "guidance_scale": 1.0,
                "cache_text_encoder_outputs": True,
            }
        )
    subset: dict[str, Any] = {"image_dir": str(job.dataset), "num_repeats": 1}
    dataset: dict[str, Any] = {
        "general": {"caption_extension": ".txt", "shuffle_caption": False, "keep_tokens": 0},
        "datasets": [
            {"resolution": c.resolution, "batch_size": c.batch_size, "enable_bucket": True, "subsets": [subset]}
        ],
    }
    extra = dict(extra or {})
    dataset_extra = extra.pop("dataset", None)
    if isinstance(dataset_extra, Mapping):
        dataset = deep_merge(dataset, dataset_extra)
    return deep_merge(args, extra), dataset


def expected_output(job: TrainJob, fmt: TrainerFormat) -> Path:
    """Where the trainer writes its final file."""
    if fmt == "ai-toolkit":
        return job.output / job.name / f"{job.name}.safetensors"
    return job.output / f"{job.name}.safetensors"


# -- TOML (the standard library reads TOML but does not write it) ------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", escaped)
    return f'"{escaped}"'


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: TOML has no {value}")  # it does (nan, inf), but no trainer wants one
        return repr(value)
    if isinstance(value, str | Path):
        return _toml_string(str(value))
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v, where)}" for k, v in value.items()) + "}"
    raise ValueError(f"{where}: cannot write {type(value).__name__} as TOML")


def _is_table_array(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and bool(value)
        and all(isinstance(v, Mapping) for v in value)
    )


def toml_dumps(data: Mapping[str, Any]) -> str:
    """TOML text of ``data``: scalars and lists first, then ``[tables]`` and ``[[arrays of tables]]``; None
    values are left out (TOML has no null)."""
    lines: list[str] = []

    def table(body: Mapping[str, Any], path: list[str]) -> None:
        nested: list[tuple[str, Any]] = []
        for key, value in body.items():
            if value is None:
                continue
            if isinstance(value, Mapping) or _is_table_array(value):
                nested.append((str(key), value))
            else:
                lines.append(f"{_toml_key(str(key))} = {_toml_value(value, '.'.join([*path, str(key)]))}")
        for key, value in nested:
            name = ".".join(_toml_key(p) for p in [*path, key])
            if isinstance(value, Mapping):
                lines.extend(["", f"[{name}]"])
                table(value, [*path, key])
            else:
                for item in value:
                    lines.extend(["", f"[[{name}]]"])
                    table(item, [*path, key])

    table(data, [])
    return "\n".join(lines).lstrip("\n") + "\n"


# -- command lines and progress ----------------------------------------------------------------------------

PLACEHOLDERS = ("config", "output", "dataset", "name")


def expand_command(command: str | Sequence[str], values: Mapping[str, str]) -> list[str]:
    """argv of ``command`` (a shell-like string split with ``shlex``, or a list) with ``{config}``, ``{output}``,
    ``{dataset}``, ``{name}`` replaced inside each argument; no shell is involved, so paths with spaces stay one
    argument. Other braces are left as they are."""
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if not argv:
        raise ValueError("the trainer command is empty")
    expanded = []
    for arg in argv:
        for name in PLACEHOLDERS:
            if name in values:
                arg = arg.replace("{" + name + "}", values[name])
        expanded.append(arg)
    return expanded


# "steps: 12/100", "step 12/100", "Step 12 / 100", and tqdm bars named "steps" (sd-scripts):
# "steps:  12%|███▏      | 12/100 [00:10<01:10, 1.2it/s, avr_loss=0.1]".
_GENERIC_PROGRESS = (
    re.compile(r"(?i)\bsteps?\s*[:=]?\s*(\d+)\s*/\s*(\d+)"),
    re.compile(r"(?i)\bsteps?\s*:\s*\d+%\|[^|]*\|\s*(\d+)\s*/\s*(\d+)"),
)


def progress_patterns(fmt: TrainerFormat | None, name: str, custom: str | None = None) -> list[re.Pattern[str]]:
    """The patterns whose two groups are (step, total): ``custom`` first, then the format's own bar, then the
    generic ``step(s) N/M`` forms."""
    patterns: list[re.Pattern[str]] = []
    if custom:
        pattern = re.compile(custom)
        if pattern.groups < 2:
            raise ValueError(f"progress pattern {custom!r} needs two groups: (step) and (total)")
        patterns.append(pattern)
    if fmt == "ai-toolkit":  # its bar is named after the job
        patterns.append(re.compile(re.escape(name) + r":\s*\d+%\|[^|]*\|\s*(\d+)\s*/\s*(\d+)"))
    patterns.extend(_GENERIC_PROGRESS)
    return patterns


def parse_progress(line: str, patterns: Sequence[re.Pattern[str]]) -> tuple[int, int] | None:
    """(step, total) from a trainer's output line, None when it is no progress line."""
    for pattern in patterns:
        match = pattern.search(line)
        if match:
            step, total = int(match.group(1)), int(match.group(2))
            if total > 0 and 0 <= step <= total:
                return step, total
    return None
