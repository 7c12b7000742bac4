"""The timeline picture: one PNG showing scenes, cuts, beats, dialogue, subtitles and the music level.

For people who would rather look than read the record: a glance shows whether cuts sit on beats, whether the
music dips under each line, and whether a subtitle runs past its line. Drawn with Pillow in the shipped font
(Korean names are drawn too).
"""

from __future__ import annotations

import math
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reelforge.media.plan import Plan
from reelforge.media.subtitles import shipped_font
from reelforge.media.timeline import Cue

__all__ = ["TimelineFacts", "draw_timeline", "level_envelope"]

WIDTH = 1600
LEFT = 110
RIGHT = 20
SCENE_COLOURS = ["#4e79a7", "#59a14f", "#b07aa1", "#f28e2b", "#76b7b2", "#edc948", "#e15759", "#9c755f"]


@dataclass
class TimelineFacts:
    """What the picture shows besides the plan: beats and snapped cuts (seconds), cues, levels, a title line."""

    beats: Sequence[float] = ()
    snapped: Sequence[bool] = ()
    cues: Sequence[Cue] = ()
    music_db: Sequence[float] = ()  # one value per ``level_step_s``
    level_step_s: float = 0.05
    title: str = ""
    notes: list[str] = field(default_factory=list)


def level_envelope(wav: Path, step_s: float = 0.05) -> list[float]:
    """RMS level (dBFS) of a mono 16-bit WAV every ``step_s``, read in chunks (memory independent of length)."""
    out: list[float] = []
    with wave.open(str(wav), "rb") as w:
        rate = w.getframerate()
        per = max(1, int(rate * step_s))
        while True:
            data = w.readframes(per)
            if not data:
                break
            x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
            rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
            out.append(20 * math.log10(rms) if rms > 1e-6 else -120.0)
    return out


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(str(shipped_font()), size)
    except OSError:  # pragma: no cover - the font ships with the package
        return ImageFont.load_default()


def draw_timeline(plan: Plan, facts: TimelineFacts, out: Path) -> Path:
    """Draw the picture of ``plan`` to ``out`` (PNG)."""
    rows = {"ruler": 26, "scenes": 54, "beats": 22, "dialogue": 40, "cues": 40, "music": 90}
    top = 40
    height = top + sum(rows.values()) + 12 * len(rows) + 24
    img = Image.new("RGB", (WIDTH, height), "white")
    d = ImageDraw.Draw(img)
    small, normal = _font(12), _font(14)
    total = plan.duration_s or 1.0
    span = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + span * max(0.0, min(1.0, t / total))

    d.text((10, 10), facts.title or f"{total:.3f} s, {plan.total_frames} frames at {float(plan.rate):g} fps",
           fill="black", font=normal)  # fmt: skip
    y = top
    bands: dict[str, tuple[int, int]] = {}
    for name, h in rows.items():
        bands[name] = (y, y + h)
        d.text((10, y + h / 2 - 7), name, fill="#555555", font=small)
        y += h + 12

    # Ruler: a tick every second (every 5 or 10 on long videos).
    y0, y1 = bands["ruler"]
    step = 1 if total <= 40 else 5 if total <= 200 else 10
    for s in range(0, int(total) + 1, step):
        d.line([(x(s), y1 - 8), (x(s), y1)], fill="black")
        d.text((x(s) + 2, y0), f"{s}s", fill="black", font=small)

    # Scenes, with xfade overlaps hatched.
    y0, y1 = bands["scenes"]
    for scene in plan.scenes:
        a, b = x(plan.frame_time(scene.start)), x(plan.frame_time(scene.end))
        colour = SCENE_COLOURS[scene.index % len(SCENE_COLOURS)]
        d.rectangle([a, y0, b, y1], fill=colour, outline="white")
        d.text((a + 4, y0 + 4), scene.label[:24], fill="white", font=small)
        d.text((a + 4, y0 + 22), f"{scene.frames / float(plan.rate):.2f} s", fill="white", font=small)
    for first, end in plan.transition_spans():
        if end > first:
            a, b = x(plan.frame_time(first)), x(plan.frame_time(end))
            for k in range(int(a), int(b), 4):
                d.line([(k, y0), (k, y1)], fill="#ffffff")

    # Beats and cuts: cuts as red lines through every row, a dot where a cut sits on a beat.
    y0, y1 = bands["beats"]
    for beat in facts.beats:
        d.line([(x(beat), y0 + 4), (x(beat), y1 - 4)], fill="#888888")
    full_top, full_bottom = bands["scenes"][0], bands["music"][1]
    for i, frame in enumerate(plan.boundary_frames()):
        cx = x(plan.frame_time(round(frame)))
        d.line([(cx, full_top), (cx, full_bottom)], fill="#d62728", width=1)
        if i < len(facts.snapped) and facts.snapped[i]:
            d.ellipse([cx - 4, (y0 + y1) / 2 - 4, cx + 4, (y0 + y1) / 2 + 4], fill="#d62728")

    # Dialogue lines (speaker and first words) and subtitle cues.
    y0, y1 = bands["dialogue"]
    for line in plan.dialogue:
        a = x(line.start_sample / plan.sample_rate)
        b = x((line.start_sample + line.samples) / plan.sample_rate)
        d.rectangle([a, y0, max(a + 2, b), y1], fill="#f1ce63", outline="#b8860b")
        label = ": ".join(part for part in (line.speaker, line.text) if part)  # no ": " without a speaker
        d.text((a + 3, y0 + 3), label[: max(1, int((b - a) / 7))], fill="black", font=small)
    y0, y1 = bands["cues"]
    for cue in facts.cues:
        a, b = x(cue.start_s), x(cue.end_s)
        d.rectangle([a, y0, max(a + 2, b), y1], fill="#d4e6f1", outline="#5b8db8")
        d.text((a + 3, y0 + 3), cue.text.replace("\n", " ")[: max(1, int((b - a) / 7))], fill="black", font=small)

    # Music level (dBFS, -60..0) after ducking; dialogue spans shaded behind it.
    y0, y1 = bands["music"]
    for line in plan.dialogue:
        a = x(line.start_sample / plan.sample_rate)
        b = x((line.start_sample + line.samples) / plan.sample_rate)
        d.rectangle([a, y0, b, y1], fill="#fbf3d5")
    d.rectangle([LEFT, y0, WIDTH - RIGHT, y1], outline="#cccccc")
    for db in (-12, -24, -36, -48):
        yy = y0 + (y1 - y0) * (-db / 60)
        d.line([(LEFT, yy), (WIDTH - RIGHT, yy)], fill="#eeeeee")
        d.text((LEFT - 34, yy - 7), f"{db}", fill="#999999", font=small)
    if facts.music_db:
        points = [
            (x(i * facts.level_step_s), y0 + (y1 - y0) * min(1.0, max(0.0, -v / 60)))
            for i, v in enumerate(facts.music_db)
        ]
        d.line(points, fill="#1f77b4", width=2)
    for k, note in enumerate(facts.notes[:2]):
        d.text((10, height - 20 - 14 * k), note, fill="#555555", font=small)
    tmp = out.with_name(f".{out.name}.tmp")
    img.save(tmp, format="PNG")
    tmp.replace(out)
    return out
