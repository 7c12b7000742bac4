"""CPU work off the event loop: engine functions in a worker thread or, for CPU-heavy work, in a child process.

``CpuRunner.call(fn_path, *args, timeout=..., process=...)`` runs the function named by ``"module:qualname"``
(a name, not a callable, so a child process can import it and a stage's definition stays plain data):

* ``process=False``: in a thread (``asyncio.to_thread``); right for work that waits on I/O or releases the GIL.
* ``process=True``: in a pool of ``spawn``-started processes (``workers`` of them, created on first use), so
  hashing or decoding never holds the GIL of the process that drives the workers. A call past its ``timeout``
  kills the pool's processes (a running function cannot be stopped any other way) and raises ``CpuTimeout``;
  a child that dies (OOM killer, segfault) raises ``CpuWorkerLost``, which a retry may fix. The pool is
  rebuilt on the next call.

Errors::

    CpuError
    ├── CpuTimeout        the function ran past its timeout (permanent: the same input takes as long again)
    └── CpuWorkerLost     the child process died under the call (transient)
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

__all__ = ["CpuError", "CpuRunner", "CpuTimeout", "CpuWorkerLost", "function_path", "resolve"]

log = logging.getLogger(__name__)


class CpuError(Exception):
    """A CPU call failed for a reason of its own (not an exception raised by the function)."""

    def __init__(self, message: str, *, function: str) -> None:
        self.function = function
        super().__init__(f"{message} ({function})")


class CpuTimeout(CpuError):
    """The call ran past its timeout; its process was killed."""


class CpuWorkerLost(CpuError):
    """The child process running the call died (killed for memory, crashed)."""


def function_path(fn: Callable[..., Any]) -> str:
    """``"module:qualname"`` of a module-level function (what ``resolve`` and child processes import)."""
    path = f"{fn.__module__}:{fn.__qualname__}"
    if "<" in fn.__qualname__ or resolve(path) is not fn:
        raise ValueError(f"{path} is not a module-level function (a child process could not import it)")
    return path


def resolve(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{path} is not callable")
    return target  # type: ignore[no-any-return]


def _call(path: str, args: tuple[Any, ...]) -> Any:
    return resolve(path)(*args)


class CpuRunner:
    """Runs engine functions by name in a thread or a process pool; use one per process (``aclose`` at end)."""

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None

    def _processes(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the parent runs threads (event loop, HTTP pools) that a fork would copy mid-state.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    async def call(self, path: str, *args: Any, timeout: float | None = None, process: bool = False) -> Any:
        """``resolve(path)(*args)`` off the loop; raises what the function raised, or a ``CpuError``."""
        if not process:
            try:
                async with asyncio.timeout(timeout):
                    return await asyncio.to_thread(_call, path, args)
            except TimeoutError as exc:
                # The thread cannot be stopped; it finishes on its own and its result is dropped.
                raise CpuTimeout(f"did not finish within {timeout:g} s", function=path) from exc
        pool = self._processes()
        future = asyncio.get_running_loop().run_in_executor(pool, _call, path, args)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            self._kill()
            raise CpuTimeout(f"did not finish within {timeout:g} s; its process was killed", function=path) from exc
        except BrokenProcessPool as exc:
            self._kill()
            raise CpuWorkerLost("the process running it died", function=path) from exc

    def _kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for proc in list(getattr(pool, "_processes", {}).values()):
            if proc.is_alive():
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
