"""Loudness: reading ebur128's summary, and deciding the gain and limiter that make two-pass loudnorm linear.

loudnorm's second pass stays *linear* (one gain for the whole programme, no pumping) only when the measured
true peak plus that gain fits under the target true peak, i.e. when the peak-to-loudness ratio is at most
``true_peak - target`` (13 dB for -14 LUFS / -1 dBTP). Speech over music often has more; loudnorm then
silently switches to dynamic mode (media-facts). ``limiter_plan`` therefore brings the mix to the target with a
pre-gain and, when its peaks would not fit, puts a limiter (alimiter) under the ceiling before the measured
pass, so the second pass's gain is a fraction of a dB and linear.

The true-peak ceiling used inside is ``true_peak_db - aac_margin_db``: AAC encoding raises true peaks by a few
tenths of a dB, and the verified figure is the one measured on the encoded file.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

__all__ = ["Loudness", "LoudnessPlan", "limiter_plan", "parse_ebur128", "parse_loudnorm_json", "refine_plan"]

_I_RE = re.compile(r"^\s*I:\s+(-?[\d.]+|-inf)\s+LUFS", re.M)
_THRESH_RE = re.compile(r"^\s*Threshold:\s+(-?[\d.]+|-inf)\s+LUFS", re.M)
_LRA_RE = re.compile(r"^\s*LRA:\s+(-?[\d.]+|-?inf|nan)\s+LU", re.M)
_PEAK_RE = re.compile(r"^\s*Peak:\s+(-?[\d.]+|-inf)\s+dBFS", re.M)
SILENCE_LUFS = -70.0  # BS.1770's absolute gate: below it nothing is measured


@dataclass(frozen=True)
class Loudness:
    """An ebur128 summary: integrated loudness (LUFS), its gate threshold, loudness range (LU), true peak (dBTP)."""

    integrated: float
    threshold: float
    lra: float
    true_peak: float

    @property
    def silent(self) -> bool:
        return self.integrated <= SILENCE_LUFS + 1e-6

    def shifted(self, gain_db: float) -> Loudness:
        """The same programme ``gain_db`` louder (every figure but the range moves by the gain)."""
        return Loudness(self.integrated + gain_db, self.threshold + gain_db, self.lra, self.true_peak + gain_db)

    def as_measured(self) -> dict[str, float]:
        """loudnorm's ``measured_*`` values."""
        return {"I": self.integrated, "LRA": self.lra, "TP": self.true_peak, "thresh": self.threshold}


def _num(text: str) -> float:
    if text in ("-inf", "inf", "nan"):
        return -math.inf if text != "nan" else 0.0
    return float(text)


def parse_ebur128(log: str) -> Loudness:
    """The last ebur128 summary in an ffmpeg log (``ValueError`` when there is none)."""
    cut = log.rfind("Summary:")
    if cut < 0:
        raise ValueError("no ebur128 summary in the ffmpeg log")
    summary = log[cut:]
    i, thresh, lra, peak = (r.search(summary) for r in (_I_RE, _THRESH_RE, _LRA_RE, _PEAK_RE))
    if i is None or thresh is None:
        raise ValueError("the ebur128 summary has no integrated loudness")
    return Loudness(
        integrated=max(SILENCE_LUFS, _num(i.group(1))),
        threshold=max(SILENCE_LUFS - 10, _num(thresh.group(1))),
        lra=_num(lra.group(1)) if lra else 0.0,
        true_peak=_num(peak.group(1)) if peak else -math.inf,
    )


def parse_loudnorm_json(log: str) -> dict[str, str]:
    """loudnorm's ``print_format=json`` report (the last ``{...}`` in the log)."""
    end = log.rfind("}")
    start = log.rfind("{", 0, end)
    if start < 0 or end < 0:
        raise ValueError("no loudnorm report in the ffmpeg log")
    report: dict[str, str] = json.loads(log[start : end + 1])
    return report


@dataclass(frozen=True)
class LoudnessPlan:
    """Pre-gain (dB) and limiter ceiling (dBFS, None: no limiter) before the second pass; ``ceiling`` is the
    true peak loudnorm is given (``true_peak_db`` less the AAC margin)."""

    gain_db: float
    limit_db: float | None
    ceiling_db: float

    def fits(self, measured: Loudness, target_lufs: float) -> bool:
        """Whether loudnorm stays linear on a chain measured as ``measured``."""
        return measured.true_peak + (target_lufs - measured.integrated) <= self.ceiling_db


def limiter_plan(
    raw: Loudness,
    *,
    target_lufs: float,
    true_peak_db: float,
    aac_margin_db: float = 0.5,
    limiter_margin_db: float = 0.8,
) -> LoudnessPlan:
    """Gain to the target and, when the peaks would then pass the ceiling, a limiter ``limiter_margin_db`` under it.

    alimiter limits sample peaks; true (inter-sample) peaks can sit up to ~0.5 dB higher, hence the margin.
    """
    ceiling = true_peak_db - aac_margin_db
    gain = target_lufs - raw.integrated
    if raw.true_peak + gain <= ceiling - 0.1:
        return LoudnessPlan(gain_db=gain, limit_db=None, ceiling_db=ceiling)
    return LoudnessPlan(gain_db=gain, limit_db=ceiling - limiter_margin_db, ceiling_db=ceiling)


def refine_plan(
    plan: LoudnessPlan,
    measured: Loudness,
    *,
    target_lufs: float,
    previous: tuple[LoudnessPlan, Loudness] | None = None,
    tolerance_lu: float = 0.2,
) -> LoudnessPlan | None:
    """The next pre-gain and limiter after measuring ``plan``'s chain as ``measured``; None when it fits.

    It fits when the chain is within ``tolerance_lu`` of the target (loudnorm's own gain is then a fraction of
    a dB) and its true peak, raised by that gain, stays 0.05 dB under the ceiling (loudnorm stays linear).

    * The limiter holds the peaks at its limit plus an inter-sample overshoot (measured: ``true_peak - limit``,
      about 1 dB on speech over music); when the peaks sit higher than the ceiling less the room for a final
      ``tolerance_lu`` of gain, the limit comes down by the excess and 0.1 dB.
    * Limiting takes loudness away: 1 dB more pre-gain into a limiter adds well under 1 LU. The gain is stepped
      by what is missing over the slope measured between ``previous`` and this round when both had the same
      limit (a secant), or over 1 (an under-step: never past the target into more limiting) otherwise.

    Measured: 3-4 rounds from a mix with 17 dB between its true peak and its loudness (bench/assembly.py).
    """
    off = target_lufs - measured.integrated
    room = plan.ceiling_db - 0.05
    if abs(off) <= tolerance_lu and measured.true_peak + max(off, 0.0) <= room:
        return None
    limit = plan.limit_db if plan.limit_db is not None else plan.ceiling_db - 0.8
    if measured.true_peak > room - tolerance_lu:
        limit -= measured.true_peak - (room - tolerance_lu) + 0.1
    slope = 1.0
    same_limit = previous is not None and previous[0].limit_db == plan.limit_db
    if previous is not None and same_limit and abs(plan.gain_db - previous[0].gain_db) > 0.01:
        slope = (measured.integrated - previous[1].integrated) / (plan.gain_db - previous[0].gain_db)
        slope = min(1.0, max(0.15, slope))
    return LoudnessPlan(gain_db=plan.gain_db + off / slope, limit_db=limit, ceiling_db=plan.ceiling_db)
