"""Errors shared across the engine."""

from __future__ import annotations

__all__ = ["InputRejected"]


class InputRejected(ValueError):
    """Bad input found before any work ran (a parameter, a file): the message names what and where.

    ``reelforge run`` exits 2 for it, as for a bad option: nothing was run, nothing was spent.
    """
