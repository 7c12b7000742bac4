"""``ExternalTrainer``: train a LoRA with a program outside ComfyUI (ai-toolkit, kohya sd-scripts, a wrapper).

``train(dataset, config, output, family=..., name=...)``:

1. checks the dataset folder: images (png, jpg, jpeg, webp) each with a same-named ``.txt`` caption;
2. writes the trainer's config file into ``output`` (``trainconfig.py``: ai-toolkit YAML ``<name>.yaml``, or
   kohya TOML ``<name>.toml`` + ``<name>.dataset.toml``);
3. runs the command (``{config}``, ``{output}``, ``{dataset}``, ``{name}`` replaced; no shell) in its own
   process group with ``PYTHONUNBUFFERED=1`` and ``REELFORGE_LORA_{CONFIG,OUTPUT,DATASET,NAME}`` in its
   environment, its stdout and stderr streamed into ``<output>/<name>.log``; lines that look like progress
   (``steps: 12/100``, ``step 12/100``, tqdm bars) call ``on_progress`` on the caller's thread;
4. returns the ``.safetensors`` file: the format's final file, else the newest ``.safetensors`` that appeared
   (or changed) under ``output`` during the run.

Errors (``reelforge.lora.errors``): ``TrainerFailed`` (non-zero exit; the last lines of output in the message),
``TrainerTimeout`` (past ``timeout_s``: the process group gets SIGTERM, then SIGKILL after ``kill_grace_s``),
``TrainerCancelled`` (``cancel`` was set), ``TrainerNoOutput``, ``LoraDatasetError``; a command that cannot be
started is a ``TrainerFailed`` with no return code. The process group is also killed when this function is left
by any other exception; a trainer outlives only a SIGKILL of this process.
"""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import yaml

from reelforge.lora.errors import (
    LoraDatasetError,
    LoraTrainingError,
    TrainerCancelled,
    TrainerFailed,
    TrainerNoOutput,
    TrainerTimeout,
)
from reelforge.lora.records import TrainingConfig
from reelforge.lora.report import LoraFamily
from reelforge.lora.trainconfig import (
    SaveDtype,
    TrainerFormat,
    TrainJob,
    ai_toolkit_config,
    expand_command,
    expected_output,
    kohya_config,
    parse_progress,
    progress_patterns,
    toml_dumps,
)

__all__ = ["IMAGE_EXTENSIONS", "ExternalTrainer", "TrainProgress", "check_dataset"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_E = TypeVar("_E", bound=LoraTrainingError)
_READ_BYTES = 64 * 1024
_POLL_S = 0.25  # how often a quiet trainer is checked for exit, timeout and cancel
_EXITED_DRAIN_S = 2.0  # output still arriving after exit (a child holding the pipe) is read this long


@dataclass(frozen=True)
class TrainProgress:
    """One progress line of the trainer: ``step`` of ``total`` and the line itself."""

    step: int
    total: int
    line: str

    @property
    def fraction(self) -> float:
        return self.step / self.total


def check_dataset(folder: Path) -> list[tuple[Path, Path]]:
    """``(image, caption)`` pairs of a dataset folder, by name; ``LoraDatasetError`` naming every problem."""
    if not folder.is_dir():
        raise LoraDatasetError(path=str(folder), problems=["is not a folder"])
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise LoraDatasetError(path=str(folder), problems=[f"holds no images ({', '.join(IMAGE_EXTENSIONS)})"])
    missing = [p.name for p in images if not p.with_suffix(".txt").is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise LoraDatasetError(path=str(folder), problems=[f"images without a .txt caption: {shown}"])
    return [(p, p.with_suffix(".txt")) for p in images]


@dataclass(frozen=True)
class _Run:
    """What every trainer error names: the output folder, the command and the log."""

    output: Path
    command: list[str]
    log_path: Path

    def error(self, cls: type[_E], message: str, **more: Any) -> _E:
        return cls(message, path=str(self.output), command=self.command, log_path=str(self.log_path), **more)


class _Output:
    """The trainer's output: every byte to the log, lines split on \\n and \\r (tqdm), a short tail kept."""

    def __init__(self, log: IO[bytes], tail_lines: int, patterns: Sequence[Any]) -> None:
        self.log = log
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.patterns = patterns
        self.pending = b""
        self.last_was_progress = False

    def feed(self, chunk: bytes) -> list[TrainProgress]:
        self.log.write(chunk)
        self.log.flush()
        data = self.pending + chunk
        parts = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self.pending = parts.pop()
        return [p for p in (self._line(raw) for raw in parts) if p is not None]

    def close(self) -> list[TrainProgress]:
        rest, self.pending = self.pending, b""
        progress = self._line(rest) if rest else None
        return [progress] if progress is not None else []

    def _line(self, raw: bytes) -> TrainProgress | None:
        line = raw.decode("utf-8", errors="replace").rstrip()
        if not line:
            return None
        found = parse_progress(line, self.patterns)
        if found is not None and self.last_was_progress and self.tail:
            self.tail[-1] = line  # a redrawn bar replaces itself: the tail keeps room for the traceback
        else:
            self.tail.append(line)
        self.last_was_progress = found is not None
        return TrainProgress(found[0], found[1], line) if found is not None else None

    def tail_text(self) -> str:
        return "\n".join(self.tail)


class ExternalTrainer:
    """Runs a LoRA trainer command on a generated config (see the module docstring)."""

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        config_format: TrainerFormat = "ai-toolkit",
        timeout_s: float = 4 * 3600.0,
        extra_config: Mapping[str, Any] | None = None,
        progress_pattern: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        save_dtype: SaveDtype = "bf16",
        tail_lines: int = 40,
        kill_grace_s: float = 10.0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        expand_command(command, {})  # an empty or unbalanced command fails here, not after a dataset check
        progress_patterns(config_format, "x", progress_pattern)  # a bad pattern too
        self.command = command
        self.config_format: TrainerFormat = config_format
        self.timeout_s = timeout_s
        self.extra_config = dict(extra_config or {})
        self.progress_pattern = progress_pattern
        self.env = dict(env or {})
        self.cwd = cwd
        self.save_dtype: SaveDtype = save_dtype
        self.tail_lines = tail_lines
        self.kill_grace_s = kill_grace_s

    def __repr__(self) -> str:
        return f"ExternalTrainer({self.command!r}, config_format={self.config_format!r})"

    # -- config -----------------------------------------------------------------------------------------

    def job(self, dataset: Path, config: TrainingConfig, output: Path, *, family: LoraFamily, name: str) -> TrainJob:
        return TrainJob(
            name=name,
            dataset=dataset.resolve(),
            output=output.resolve(),
            config=config,
            family=family,
            save_dtype=self.save_dtype,
        )

    def write_config(self, job: TrainJob) -> Path:
        """Write the trainer's config file(s) into ``job.output``; returns the one the command is given."""
        job.output.mkdir(parents=True, exist_ok=True)
        if self.config_format == "ai-toolkit":
            path = job.output / f"{job.name}.yaml"
            text = yaml.safe_dump(ai_toolkit_config(job, self.extra_config), sort_keys=False, allow_unicode=True)
            _write_text(path, text)
            return path
        path = job.output / f"{job.name}.toml"
        dataset_path = job.output / f"{job.name}.dataset.toml"
        args, dataset = kohya_config(job, dataset_path, self.extra_config)
        _write_text(dataset_path, toml_dumps(dataset))
        _write_text(path, toml_dumps(args))
        return path

    # -- run --------------------------------------------------------------------------------------------

    def train(
        self,
        dataset: Path,
        config: TrainingConfig,
        output: Path,
        *,
        family: LoraFamily,
        name: str = "lora",
        on_progress: Callable[[TrainProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Path:
        """Train; the produced ``.safetensors`` file (see the module docstring for the steps and errors)."""
        check_dataset(dataset)
        job = self.job(dataset, config, output, family=family, name=name)
        config_path = self.write_config(job)
        values = {"config": str(config_path), "output": str(job.output), "dataset": str(job.dataset), "name": name}
        argv = expand_command(self.command, values)
        log_path = job.output / f"{name}.log"
        before = _safetensors_state(job.output)
        patterns = progress_patterns(self.config_format, name, self.progress_pattern)
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **{f"REELFORGE_LORA_{k.upper()}": v for k, v in values.items()},
            **self.env,
        }

        with open(log_path, "wb") as log:
            log.write(f"$ {subprocess.list2cmdline(argv)}\n".encode())
            out = _Output(log, self.tail_lines, patterns)
            run = _Run(job.output, argv, log_path)
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    env=env,
                    start_new_session=True,  # its own process group: a timeout stops its children too
                )
            except OSError as exc:
                raise run.error(
                    TrainerFailed, f"trainer command {argv[0]!r} could not be started: {exc.strerror or exc}"
                ) from exc
            try:
                returncode = self._watch(proc, out, on_progress, cancel, run)
            finally:
                _stop_group(proc, self.kill_grace_s)
                if proc.stdout is not None:
                    proc.stdout.close()

        tail = out.tail_text()
        if returncode != 0:
            how = f"exited with status {returncode}"
            if returncode < 0:  # e.g. the kernel's OOM killer: SIGKILL
                with contextlib.suppress(ValueError):
                    how = f"was killed by {signal.Signals(-returncode).name}"
            raise run.error(
                TrainerFailed,
                f"trainer {how}; last output:\n{tail}" if tail else f"trainer {how} and printed nothing",
                returncode=returncode,
                output_tail=tail,
            )
        produced = _produced(job.output, expected_output(job, self.config_format), before)
        if produced is None:
            raise run.error(
                TrainerNoOutput,
                f"trainer exited 0 but wrote no .safetensors file under {job.output} "
                f"(expected {expected_output(job, self.config_format)}); log: {log_path}",
                returncode=0,
                output_tail=tail,
            )
        return produced

    def _watch(
        self,
        proc: subprocess.Popen[bytes],
        out: _Output,
        on_progress: Callable[[TrainProgress], None] | None,
        cancel: threading.Event | None,
        run: _Run,
    ) -> int:
        """Stream the output until the trainer exits; its return code. Raises on timeout and cancel."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + self.timeout_s
        exited_at: float | None = None
        last_step: tuple[int, int] | None = None

        def report(progress: list[TrainProgress]) -> None:
            nonlocal last_step
            for item in progress:
                if on_progress is not None and (item.step, item.total) != last_step:
                    on_progress(item)
                last_step = (item.step, item.total)

        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if cancel is not None and cancel.is_set():
                    raise run.error(TrainerCancelled, "training was cancelled", output_tail=out.tail_text())
                if now >= deadline:
                    raise self._timeout(run, out)
                if selector.select(timeout=min(_POLL_S, deadline - now)):
                    chunk = os.read(fd, _READ_BYTES)
                    if not chunk:
                        break  # EOF: everyone holding the pipe has closed it
                    report(out.feed(chunk))
                    continue
                if proc.poll() is not None:
                    exited_at = exited_at if exited_at is not None else now
                    if now - exited_at >= _EXITED_DRAIN_S:
                        break  # exited; a child of it still holds the pipe (it is stopped with the group)
        report(out.close())
        try:
            return proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise self._timeout(run, out) from None

    def _timeout(self, run: _Run, out: _Output) -> TrainerTimeout:
        tail = out.tail_text()
        return run.error(
            TrainerTimeout,
            f"trainer ran past its timeout of {self.timeout_s:g} s and was stopped"
            + (f"; last output:\n{tail}" if tail else ""),
            timeout_s=self.timeout_s,
            output_tail=tail,
        )


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the trainer's process group, SIGKILL it after ``grace_s``; quiet when it is gone already."""

    def signal_group(sig: signal.Signals) -> bool:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    if proc.poll() is None or _group_alive(proc.pid):
        signal_group(signal.SIGTERM)
        end = time.monotonic() + grace_s
        while time.monotonic() < end and (proc.poll() is None or _group_alive(proc.pid)):
            time.sleep(0.05)
        if proc.poll() is None or _group_alive(proc.pid):
            signal_group(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _safetensors_state(folder: Path) -> dict[Path, int]:
    """``.safetensors`` files under ``folder`` and their mtimes (ns)."""
    if not folder.is_dir():
        return {}
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*.safetensors") if p.is_file()}


def _produced(folder: Path, expected: Path, before: Mapping[Path, int]) -> Path | None:
    """The final file when the trainer wrote it, else the newest new or changed ``.safetensors``."""
    after = _safetensors_state(folder)
    fresh = {p: t for p, t in after.items() if before.get(p) != t}
    if expected in fresh:
        return expected
    if not fresh:
        return None
    return max(fresh, key=lambda p: (fresh[p], str(p)))
