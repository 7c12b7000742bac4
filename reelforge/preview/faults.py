"""Fault injection for the preview worker.

Spec grammar (``--faults`` of ``reelforge preview-worker``, ``PreviewWorker(faults=...)``): comma-separated
``key=value`` pairs, whitespace ignored, each key at most once::

    spec   := ""  | item ("," item)*
    item   := "crash_at_node=" INT     # crash when the INT-th node execution (1-based, counted from start
                                       # or from arming) begins: the server stops answering mid-prompt
            | "restart_after=" FLOAT   # after a crash, come back on the same port after FLOAT seconds
                                       # (empty queue and history, output files kept); absent = stay down
            | "http500=" FLOAT         # probability (0..1) that an HTTP request answers 500
            | "http500_next=" INT      # the next INT HTTP requests answer 500
            | "drop_ws_after=" INT     # close every WebSocket once INT frames have been sent in total
            | "slow_view=" FLOAT       # delay /view by FLOAT seconds before the body
            | "near_duplicate=" FLOAT  # probability (0..1) that an image SaveImage writes is, instead of its
                                       # own, an earlier output of this worker slightly altered
            | "seed=" INT              # seed of the random draws (http500, near_duplicate)

Example: ``crash_at_node=2,restart_after=3,http500=0.2,drop_ws_after=5,slow_view=1.5,seed=1``.

Tests arm faults at runtime on ``worker.faults``: ``arm_crash(after_nodes=1)``, ``http500_next(n)``,
``drop_ws()``, ``set_http500_rate(p)``, ``set_slow_view(s)``, ``near_duplicates(n)`` (the next n saved images),
``set_near_duplicate_rate(p)``, ``clear()``. A crash fires once per arming.

Near-duplicates exercise the regeneration path: the image keeps its file name and its own prompt metadata, but
its pixels are the worker's most recent original output (not itself a near-duplicate), resized to the new size if
it differs, a little brighter or darker (2 levels) with a few pixels nudged by one level: different bytes, a pHash
within a few bits of the earlier one. Only PNGs in the output folder count; the first image a worker saves is
always its own (an armed near-duplicate waits for an earlier output). ``faults.near_duplicates_made`` lists what
was swapped (``NearDuplicate(path, source, seed)``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_INT_KEYS = {"crash_at_node", "http500_next", "drop_ws_after", "seed"}
_FLOAT_KEYS = {"restart_after", "http500", "slow_view", "near_duplicate"}
_PROBABILITIES = ("http500", "near_duplicate")


@dataclass(frozen=True)
class FaultSpec:
    """Parsed fault spec; every field off by default."""

    crash_at_node: int | None = None
    restart_after: float | None = None
    http500: float = 0.0
    http500_next: int = 0
    drop_ws_after: int | None = None
    slow_view: float = 0.0
    near_duplicate: float = 0.0
    seed: int | None = None


def parse_faults(spec: str | None) -> FaultSpec:
    """Parse a fault spec string (grammar in the module docstring); raise ValueError on anything else."""
    values: dict[str, int | float] = {}
    for raw in (spec or "").split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key not in _INT_KEYS | _FLOAT_KEYS:
            known = ", ".join(sorted(_INT_KEYS | _FLOAT_KEYS))
            raise ValueError(f"unknown fault {key!r} in {spec!r} (known: {known})")
        if not sep:
            raise ValueError(f"fault {key!r} needs a value ({key}=...)")
        if key in values:
            raise ValueError(f"fault {key!r} given twice in {spec!r}")
        kind = "an integer" if key in _INT_KEYS else "a number"
        try:
            number: int | float = int(value) if key in _INT_KEYS else float(value)
        except ValueError:
            raise ValueError(f"fault {key!r} needs {kind}, got {value!r}") from None
        if not math.isfinite(number):  # nan would compare false everywhere, inf would sleep forever
            raise ValueError(f"fault {key!r} needs a finite number, got {value!r}")
        if number < 0:
            raise ValueError(f"fault {key!r} must not be negative, got {value!r}")
        values[key] = number
    for key in _PROBABILITIES:
        if float(values.get(key, 0.0)) > 1:
            raise ValueError(f"fault {key!r} is a probability between 0 and 1, got {values[key]:g}")
    http500 = float(values.get("http500", 0.0))
    crash = values.get("crash_at_node")
    if crash is not None and crash < 1:
        raise ValueError("fault 'crash_at_node' counts nodes from 1")
    drop = values.get("drop_ws_after")
    restart = values.get("restart_after")
    seed = values.get("seed")
    return FaultSpec(
        crash_at_node=int(crash) if crash is not None else None,
        restart_after=float(restart) if restart is not None else None,
        http500=http500,
        http500_next=int(values.get("http500_next", 0)),
        drop_ws_after=int(drop) if drop is not None else None,
        slow_view=float(values.get("slow_view", 0.0)),
        near_duplicate=float(values.get("near_duplicate", 0.0)),
        seed=int(seed) if seed is not None else None,
    )


@dataclass(frozen=True)
class NearDuplicate:
    """An output whose pixels were replaced by an altered copy of an earlier output (``source``)."""

    path: Path
    source: Path
    seed: int


class Faults:
    """Armed faults of one worker; the server and executor consult it, tests arm it at runtime.

    Thread-safe: tests may arm faults from another thread than the worker's event loop.
    """

    def __init__(self, spec: FaultSpec | str | None = None) -> None:
        parsed = spec if isinstance(spec, FaultSpec) else parse_faults(spec)
        self.spec = parsed
        self._lock = threading.Lock()
        self._rng = random.Random(parsed.seed)
        # Nodes still allowed to start before the crash; None = no crash armed.
        self._crash_countdown: int | None = (
            parsed.crash_at_node - 1 if parsed.crash_at_node is not None else None
        )
        self.restart_after: float | None = parsed.restart_after
        self.http500_rate = parsed.http500
        self._http500_pending = parsed.http500_next
        self._drop_after = parsed.drop_ws_after
        self._frames = 0
        self.slow_view = parsed.slow_view
        self.crashes = 0  # how many crashes fired (for tests and benchmarks)
        self.near_duplicate_rate = parsed.near_duplicate
        self._near_pending = 0
        # Its own draws, so arming http500 does not change which images become near-duplicates.
        self._near_rng = random.Random(None if parsed.seed is None else f"near_duplicate/{parsed.seed}")
        self._last_original: Path | None = None
        self.near_duplicates_made: list[NearDuplicate] = []
        # Set by the server: closes every WebSocket (may be called from any thread).
        self.drop_ws_hook: Callable[[], None] | None = None

    # --- arming (tests) -------------------------------------------------------------------------
    def arm_crash(self, after_nodes: int = 0, *, restart_after: float | None = None) -> None:
        """Crash when the node after the next ``after_nodes`` node executions begins."""
        with self._lock:
            self._crash_countdown = max(0, after_nodes)
            if restart_after is not None:
                self.restart_after = restart_after

    def http500_next(self, n: int = 1) -> None:
        """Answer the next ``n`` HTTP requests with 500."""
        with self._lock:
            self._http500_pending += n

    def set_http500_rate(self, probability: float) -> None:
        with self._lock:
            self.http500_rate = probability

    def set_slow_view(self, seconds: float) -> None:
        self.slow_view = seconds

    def drop_ws(self) -> None:
        """Close every WebSocket of the worker now."""
        hook = self.drop_ws_hook
        if hook is not None:
            hook()

    def drop_ws_after(self, frames: int) -> None:
        """Close every WebSocket once ``frames`` more frames have been sent."""
        with self._lock:
            self._frames = 0
            self._drop_after = frames

    def near_duplicates(self, n: int = 1) -> None:
        """Make the next ``n`` saved images near-duplicates of an earlier output (see the module docstring)."""
        with self._lock:
            self._near_pending += n

    def set_near_duplicate_rate(self, probability: float) -> None:
        with self._lock:
            self.near_duplicate_rate = probability

    def clear(self) -> None:
        """Disarm everything."""
        with self._lock:
            self._near_pending = 0
            self.near_duplicate_rate = 0.0
            self._crash_countdown = None
            self.restart_after = None
            self.http500_rate = 0.0
            self._http500_pending = 0
            self._drop_after = None
            self.slow_view = 0.0

    # --- checks (server / executor) -------------------------------------------------------------
    def crash_now(self) -> bool:
        """Called when a node execution begins: True means crash instead (fires once per arming)."""
        with self._lock:
            if self._crash_countdown is None:
                return False
            if self._crash_countdown > 0:
                self._crash_countdown -= 1
                return False
            self._crash_countdown = None
            self.crashes += 1
            return True

    def http500_now(self) -> bool:
        """Called per HTTP request: True means answer 500."""
        with self._lock:
            if self._http500_pending > 0:
                self._http500_pending -= 1
                return True
            return self.http500_rate > 0 and self._rng.random() < self.http500_rate

    def ws_frame_sent(self) -> bool:
        """Called per WebSocket frame sent: True means close every socket now (fires once)."""
        with self._lock:
            if self._drop_after is None:
                return False
            self._frames += 1
            if self._frames >= self._drop_after:
                self._drop_after = None
                return True
            return False

    def images_saved(self, paths: Iterable[Path]) -> list[NearDuplicate]:
        """Called with the PNGs a node just wrote: which of them to turn into near-duplicates, and of what.

        Bookkeeping only (no I/O but an existence check): the caller then runs ``write_near_duplicates`` (in a
        thread: it decodes and encodes PNGs).
        """
        swaps: list[NearDuplicate] = []
        with self._lock:
            for path in paths:
                source = self._last_original
                if source is None or not source.is_file():
                    self._last_original = path
                    continue
                if self._near_pending > 0:
                    self._near_pending -= 1
                elif not (self.near_duplicate_rate > 0 and self._near_rng.random() < self.near_duplicate_rate):
                    self._last_original = path
                    continue
                swaps.append(NearDuplicate(path=path, source=source, seed=self._near_rng.getrandbits(32)))
        return swaps

    def write_near_duplicates(self, swaps: Iterable[NearDuplicate]) -> list[NearDuplicate]:
        """Write the swaps ``images_saved`` chose; one that fails leaves its image as it was (logged)."""
        done = []
        for swap in swaps:
            try:
                write_near_duplicate(swap)
            except Exception as exc:  # a fault must never break the prompt it rides on
                log.warning("near_duplicate fault: %s stays its own image (%s: %s)", swap.path, type(exc).__name__, exc)
                continue
            done.append(swap)
        with self._lock:
            self.near_duplicates_made += done
        return done


def saved_output_images(output_dir: Path, ui: Mapping[str, Any] | None) -> list[Path]:
    """The PNG files a node's UI result names in the output folder (``{"images": [{filename, subfolder, type}]}``).

    Animated results (SaveAnimatedPNG's APNG, ``"animated": [true]``) are not still images and are left alone.
    """
    if any((ui or {}).get("animated") or []):
        return []
    images = (ui or {}).get("images") or []
    return [
        output_dir / str(image.get("subfolder") or "") / str(image["filename"])
        for image in images
        if isinstance(image, dict) and image.get("type") == "output" and str(image.get("filename", "")).endswith(".png")
    ]


def write_near_duplicate(swap: NearDuplicate) -> None:
    """Overwrite ``swap.path`` with ``swap.source`` slightly altered, keeping the path's own size and PNG text."""
    import numpy as np  # here, not at the top: the fault grammar stays cheap to import
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    with Image.open(swap.path) as own:
        size, mode = own.size, own.mode
        text = {k: v for k, v in own.info.items() if isinstance(k, str) and isinstance(v, str)}
    with Image.open(swap.source) as earlier:
        picture = earlier.convert(mode if mode in ("L", "RGB", "RGBA") else "RGB")
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    rng = np.random.default_rng(swap.seed)
    original = np.asarray(picture)
    colours = original.reshape(size[0] * size[1], -1)[:, :3]  # never the alpha channel
    # A uniform shift moves only the DC coefficient (the hash barely notices); nudged pixels make sure the
    # bytes differ even where the shift is clipped away (a white image).
    shifted = (colours.astype(np.int16) + int(rng.choice([-2, 2]))).clip(0, 255)
    chosen = rng.choice(len(colours), size=min(len(colours), max(1, len(colours) // 50_000)), replace=False)
    shifted[chosen] = np.where(colours[chosen] < 255, colours[chosen].astype(np.int16) + 1, 254)
    pixels = original.reshape(size[0] * size[1], -1).copy()
    pixels[:, :3] = shifted
    altered = Image.fromarray(pixels.reshape(original.shape).astype(np.uint8))  # L, RGB or RGBA by shape
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    fd, tmp = tempfile.mkstemp(dir=swap.path.parent, prefix=f".{swap.path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        altered.save(tmp, format="PNG", pnginfo=info, compress_level=4)
        os.replace(tmp, swap.path)  # a reader sees the old file or the new one, never half of one
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
