"""Subtitles: SRT always (pysubs2), ASS for burning in, the font the package ships, and checks that text shows.

Burning in with libass renders nothing, or boxes, and still exits 0 when no usable font is found
(media-facts). So before any long encode:

* the font file must open (fontTools) and have a glyph for every character of every cue (``missing_glyphs``):
  a Latin-only font draws Korean as empty boxes ("tofu"), measured here; with ``missing_glyphs="error"`` (the
  default) the cue and characters are named in a ``FontUnavailable``;
* libass is given a folder holding only that font (``fonts_dir``), so it cannot fall back on whatever the
  machine has (a missing family falls back silently to a system font) and does not load a whole collection;
* ``render_check`` draws every distinct cue on black with that folder and counts lit pixels per cue.

The font shipped is Kurinto Sans KR (SIL OFL 1.1, from the ``weblate-fonts`` package): Latin, Greek, Cyrillic,
Hangul and common Hanja/Kanji, so Korean names (김민아) are drawn. What it lacks (emoji, rarer CJK ideographs)
is refused up front, or drawn as boxes with ``missing_glyphs="allow"``.
"""

from __future__ import annotations

import os
import shutil
import unicodedata
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from reelforge.media.errors import FontUnavailable
from reelforge.media.ffmpeg import run_ffmpeg
from reelforge.media.timeline import Cue

__all__ = [
    "FontInfo",
    "fonts_dir",
    "load_font",
    "missing_glyphs",
    "render_check",
    "shipped_font",
    "write_ass",
    "write_srt",
]

SHIPPED_FONT = ("kurinto", "ttf", "KurintoSansKR-Rg.ttf")


def shipped_font() -> Path:
    """The subtitle font the package ships (Kurinto Sans KR Regular, from ``weblate-fonts``)."""
    import weblate_fonts

    base = Path(weblate_fonts.__file__).parent / "static" / "weblate_fonts"
    return base.joinpath(*SHIPPED_FONT)


class FontInfo:
    """A font file, its family name (what ASS styles refer to) and the code points it can draw."""

    def __init__(self, path: Path, family: str, codepoints: frozenset[int]) -> None:
        self.path = path
        self.family = family
        self.codepoints = codepoints


@cache
def _load(path: str, mtime: float) -> FontInfo:
    from fontTools.ttLib import TTFont, TTLibError

    try:
        font = TTFont(path, lazy=True, fontNumber=0)
        family = font["name"].getDebugName(1) or Path(path).stem
        cmap = font.getBestCmap() or {}
    except (TTLibError, OSError, KeyError, AssertionError) as exc:
        raise FontUnavailable(f"is not a readable TrueType/OpenType font: {exc}", font=path) from exc
    return FontInfo(Path(path), str(family), frozenset(cmap))


def load_font(path: Path | str | None = None) -> FontInfo:
    """Open ``path`` (None: the shipped font); ``FontUnavailable`` names a missing or unreadable file."""
    p = Path(path) if path is not None else shipped_font()
    if not p.is_file():
        raise FontUnavailable("no such font file", font=p)
    return _load(str(p.resolve()), p.stat().st_mtime)


def _drawable(ch: str) -> bool:
    """Characters that need a glyph: not whitespace, not controls or format characters (ZWJ, BOM)."""
    return not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf")


def missing_glyphs(texts: Sequence[str], font: FontInfo) -> list[tuple[int, str]]:
    """``(cue index, characters)`` for every text with characters the font has no glyph for."""
    out = []
    for i, text in enumerate(texts):
        missing = sorted({ch for ch in text if _drawable(ch) and ord(ch) not in font.codepoints})
        if missing:
            out.append((i, "".join(missing)))
    return out


def check_font(cues: Sequence[Cue], font: FontInfo) -> None:
    """Refuse cues the font cannot draw (``FontUnavailable`` naming the font, the cues and the characters)."""
    missing = missing_glyphs([c.text for c in cues], font)
    if missing:
        chars = sorted({ch for _, text in missing for ch in text})
        where = ", ".join(f"cue {i} ({text!r})" for i, text in missing[:5])
        raise FontUnavailable(
            f"has no glyph for {''.join(chars)!r} used in {where}{' ...' if len(missing) > 5 else ''}: "
            "choose a font that covers them (subtitles.font) or allow boxes (subtitles.missing_glyphs='allow')",
            font=font.path,
            missing=chars,
        )


def fonts_dir(font: FontInfo, workdir: Path) -> Path:
    """A folder under ``workdir`` holding only ``font`` (a link, or a copy where links are not allowed)."""
    folder = workdir / "fonts"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / font.path.name
    if not target.exists():
        try:
            os.symlink(font.path, target)
        except OSError:
            shutil.copyfile(font.path, target)
    return folder


def _ass_text(text: str) -> str:
    # ASS reads {...} as override tags and \N as a line break; cue text is plain.
    return text.replace("\\", "\\\u200b").replace("{", "(").replace("}", ")").replace("\r\n", "\n").replace("\n", "\\N")


def write_srt(cues: Sequence[Cue], path: Path) -> Path:
    """The cues as SubRip (UTF-8), times rounded to the millisecond."""
    import pysubs2

    subs = pysubs2.SSAFile()
    for cue in cues:
        subs.append(
            pysubs2.SSAEvent(start=round(cue.start_s * 1000), end=round(cue.end_s * 1000), text=_ass_text(cue.text))
        )
    subs.save(str(path), format_="srt", encoding="utf-8")
    return path


def write_ass(
    cues: Sequence[Cue],
    path: Path,
    *,
    width: int,
    height: int,
    family: str,
    size: int = 0,
    margin: int = 0,
    starts: Sequence[float] | None = None,
    length_s: float | None = None,
) -> Path:
    """The cues as ASS for libass, in ``family`` at ``size`` px (0: 5.5% of the height), bottom centre.

    ``starts``/``length_s`` override the cue times (``render_check`` shows each cue for one frame).
    """
    import pysubs2

    subs = pysubs2.SSAFile()
    subs.info["PlayResX"] = str(width)
    subs.info["PlayResY"] = str(height)
    subs.info["WrapStyle"] = "0"
    subs.info["ScaledBorderAndShadow"] = "yes"
    style = subs.styles["Default"]
    style.fontname = family
    style.fontsize = size or round(height * 0.055)
    style.marginv = margin or round(height * 0.06)
    style.outline = max(1.0, round(height / 360))
    style.shadow = 0
    style.primarycolor = pysubs2.Color(255, 255, 255)
    style.outlinecolor = pysubs2.Color(0, 0, 0)
    for k, cue in enumerate(cues):
        start = starts[k] if starts is not None else cue.start_s
        end = start + length_s if length_s is not None else cue.end_s
        subs.append(pysubs2.SSAEvent(start=round(start * 1000), end=round(end * 1000), text=_ass_text(cue.text)))
    subs.save(str(path), format_="ass", encoding="utf-8")
    return path


def render_check(
    cues: Sequence[Cue],
    font: FontInfo,
    workdir: Path,
    *,
    width: int,
    height: int,
    min_pixels: int = 3,
    timeout: float = 120,
) -> list[int]:
    """Draw each distinct cue once on black through libass with only ``font`` available; lit pixels per cue.

    Raises ``FontUnavailable`` when a cue draws nothing (the failure that exits 0). Drawn at least 720 lines
    high (libass scales from PlayRes; on a 180-line picture a lone "." lights no pixel at all), one 10 fps
    frame per cue, the lower 40% read back: well under a second.
    """
    texts = list(dict.fromkeys(c.text for c in cues if any(_drawable(ch) for ch in c.text)))
    if not texts:
        return []
    scale = max(1.0, 720 / height)
    w, h = round(width * scale) // 2 * 2, round(height * scale) // 2 * 2
    band = h * 2 // 5 // 2 * 2  # cues sit at the bottom: only the lower 40% is read back
    probe_cues = [Cue(start_s=0, end_s=1, text=t) for t in texts]
    folder = fonts_dir(font, workdir)
    ass = write_ass(
        probe_cues, workdir / "render-check.ass", width=width, height=height, family=font.family,
        starts=[0.1 * k for k in range(len(texts))], length_s=0.06,
    )  # fmt: skip
    proc = run_ffmpeg(
        ["-f", "lavfi", "-i", f"color=black:size={w}x{h}:rate=10", "-frames:v", str(len(texts)),
         "-vf", f"subtitles=filename={ass.name}:fontsdir={folder.name},crop={w}:{band}:0:{h - band},format=gray",
         "-f", "rawvideo", "pipe:1"],
        timeout=timeout, input_path=font.path, cwd=workdir,
    )  # fmt: skip
    frames = np.frombuffer(proc.stdout, dtype=np.uint8)
    frames = frames[: (frames.size // (w * band)) * w * band].reshape(-1, band, w)
    counts = [int((f > 100).sum()) for f in frames]
    blank = [texts[i] for i, n in enumerate(counts) if n < min_pixels]
    if len(counts) < len(texts) or blank:
        raise FontUnavailable(
            f"libass drew no text with this font for {blank[:3] or texts[len(counts) :][:3]}: burned subtitles "
            "would be invisible",
            font=font.path,
        )
    return counts
