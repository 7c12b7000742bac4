"""The production plan: pure decisions from a script to frames, segments, chains, lip-sync windows and line times.

No I/O. Every time is whole frames at the video model's rate (Wan: 16 fps) so what is generated, trimmed and
assembled agrees to the frame:

* **Scene frames**: scene ``k`` spans ``[round(16 * start_k), round(16 * end_k))``; the scenes sum to
  ``round(16 * total)`` exactly.
* **Segments (shots)**: a scene is one or more generated segments of at most ``segment_frames`` (81) frames, each
  a ``4n+1`` length; a segment seeded by the previous one's exact last frame repeats that frame as its frame 0,
  which is dropped (``skip_first``). Each segment is generated a little longer than it is shown and trimmed.
* **Chains**: a segment continues from the previous one when it is the 2nd+ segment of a scene, or the first of a
  ``continues_previous`` scene; after ``max_chain`` chained segments a fresh keyframe starts a new chain (chained
  extensions drift in colour after about 6).
* **Beat snap** (optional, before anything is animated): ``snap_spans`` moves the scene boundaries to the
  frames nearest the music's beats (the media engine's ``snap_boundaries``: total unchanged, no scene under the
  minimum), and ``plan_scenes(spans=...)`` plans the segments on the snapped frames.
* **Lip sync**: from the first line of an on-screen speaker to the scene's end, in windows of at most
  ``window_frames`` (77, Wan S2V's chunk), each generated as ``4n+1`` frames and trimmed or padded back. The
  windows are also cut where the on-screen speaker changes (in the gap between the two lines), so each window
  lip-syncs one speaker: Wan S2V has no per-person mask, it animates whom the prompt and the audio point at.
* **Placement**: a scene's characters stand left to right in the order the scene lists them; the keyframe prompt
  says so (``placement_text``) and each lip-sync window's prompt names who speaks, where, and to whom
  (``speaker_prompt``).
* **Keyframe identities** (``keyframe_identities``): whose identity a keyframe carries, left first: the first two
  on-screen characters with a LoRA (one each on the left and right half, keyframe_two_shot), only the first for a
  posed keyframe (keyframe_pose holds one identity), nobody without a cast member on screen.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection
from typing import Literal

from pydantic import BaseModel, ConfigDict

from reelforge.hashing import canonical_sha256
from reelforge.media import snap_boundaries
from reelforge.script import Scene, Script

__all__ = [
    "LipSyncPlan",
    "ScenePlan",
    "SegmentPlan",
    "SnappedSpans",
    "four_n_plus_one",
    "keyframe_identities",
    "lipsync_plan",
    "lipsync_windows",
    "place_lines",
    "placement_text",
    "placements",
    "plan_scenes",
    "scene_frames",
    "shot_identity",
    "snap_spans",
    "speaker_prompt",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def four_n_plus_one(frames: int) -> int:
    """The smallest ``4n+1`` length holding ``frames`` frames (Wan's VAE decodes ``4n+1``)."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, not {frames}")
    return 4 * math.ceil((frames - 1) / 4) + 1


def scene_frames(durations: list[float], fps: float) -> list[tuple[int, int]]:
    """``(first_frame, frame_count)`` of each scene, rounding the running end so the counts sum exactly."""
    out: list[tuple[int, int]] = []
    start_s = 0.0
    first = 0
    for duration in durations:
        start_s += duration
        end = round(start_s * fps)
        out.append((first, end - first))
        first = end
    return out


class SegmentPlan(_Model):
    """One generated segment of a scene: a shot."""

    scene: int  # 1-based scene number
    shot: int  # 1-based within the scene
    shown: int  # frames it contributes to the video
    length: int  # frames generated (4n+1 >= shown + skip_first)
    start: Literal["keyframe", "chain"]  # seeded by the scene's keyframe, or the previous segment's last frame
    chain_position: int  # 0 for a fresh keyframe, then 1, 2, ... along a chain
    end_frame: bool = False  # first/last-frame mode: this segment ends on the scene's described end frame

    @property
    def skip_first(self) -> bool:
        """Frame 0 of a chained segment is the previous segment's last frame, already shown."""
        return self.start == "chain"


class LipSyncPlan(_Model):
    """The lip-synced part of a scene: from ``start`` (a frame of the scene) to its end, in windows, each of one
    on-screen speaker."""

    start: int  # scene-relative first frame
    windows: list[int]  # frames per window, summing to the scene's frames - start
    lengths: list[int]  # 4n+1 frames generated per window
    speakers: list[str]  # who each window lip-syncs

    @property
    def frames(self) -> int:
        return sum(self.windows)


class ScenePlan(_Model):
    number: int
    first_frame: int  # in the video
    frames: int
    segments: list[SegmentPlan]
    keyframe: bool  # a keyframe is made for it (its first segment starts fresh, or it has an end frame)


def _split(frames: int, chained_first: bool, segment_frames: int) -> list[int]:
    """Shown frames per segment: as few segments as hold ``frames``, of near-equal length."""
    count = 1
    while True:
        base, extra = divmod(frames, count)
        parts = [base + (1 if i < extra else 0) for i in range(count)]
        # every segment after the first, and the first when chained, generates one frame more than it shows
        fits = all(p + (1 if (i > 0 or chained_first) else 0) <= segment_frames for i, p in enumerate(parts))
        if fits:
            return parts
        count += 1


class SnappedSpans(_Model):
    """Scene spans after beat snapping: ``(first_frame, frames)`` per scene, and how each cut fared."""

    spans: list[tuple[int, int]]
    snapped: list[bool]  # per cut (boundary between scene k and k+1)
    errors_s: list[float | None]  # per cut: distance of its frame to the beat (None: left where it was)


def snap_spans(spans: list[tuple[int, int]], beats_s: list[float], *, fps: float, tolerance_s: float,
               min_frames: int, max_frames: int) -> SnappedSpans:
    """The cuts between scenes moved to the frames nearest beats (timeline seconds) within ``tolerance_s``; the
    first and last frame never move, no scene gets fewer than ``min_frames`` (or fewer than it had, when it was
    already shorter) nor more than ``max(max_frames, its frames)``. When nothing fits, the spans stay."""
    total = sum(n for _, n in spans)
    cuts = [first for first, _ in spans[1:]]
    result = snap_boundaries(cuts, beats_s, fps=fps, total=total, tolerance_s=tolerance_s,
                             min_gaps=[min(min_frames, n) for _, n in spans],
                             max_gaps=[max(max_frames, n) for _, n in spans])
    edges = [0, *result.boundaries, total]
    return SnappedSpans(spans=[(a, b - a) for a, b in itertools.pairwise(edges)],
                        snapped=list(result.snapped), errors_s=list(result.errors_s))


def plan_scenes(script: Script, *, fps: float, segment_frames: int, max_chain: int,
                spans: list[tuple[int, int]] | None = None) -> list[ScenePlan]:
    """Scene by scene: its frames (``spans`` when given, e.g. snapped to beats; else from the durations), its
    segments (chained or fresh), whether it needs a keyframe."""
    if max_chain < 1:
        raise ValueError(f"max_chain must be at least 1, not {max_chain}")
    if spans is None:
        spans = scene_frames([s.duration_s for s in script.scenes], fps)
    elif len(spans) != len(script.scenes):
        raise ValueError(f"{len(spans)} spans for {len(script.scenes)} scenes")
    plans: list[ScenePlan] = []
    position = 0  # chained segments since the last fresh keyframe
    for scene, (first, frames) in zip(script.scenes, spans, strict=True):
        chained = bool(plans) and scene.continues_previous and position < max_chain
        parts = _split(frames, chained, segment_frames)
        segments = []
        for i, shown in enumerate(parts):
            chain = i > 0 or chained
            if chain and position >= max_chain:
                chain = False  # a fresh keyframe starts a new chain
            position = position + 1 if chain else 0
            generated = shown + (1 if chain else 0)
            segments.append(SegmentPlan(
                scene=scene.number, shot=i + 1, shown=shown, length=four_n_plus_one(max(generated, 5)),
                start="chain" if chain else "keyframe", chain_position=position,
                end_frame=scene.first_last_frame and i == len(parts) - 1,
            ))
        needs_keyframe = any(s.start == "keyframe" for s in segments) or scene.first_last_frame
        plans.append(ScenePlan(number=scene.number, first_frame=first, frames=frames, segments=segments,
                               keyframe=needs_keyframe))
    return plans


def place_lines(scene_s: float, durations: list[float], *, lead_s: float = 0.3, gap_s: float = 0.2) -> list[float]:
    """Scene-relative start of each line: after a lead-in, one after another with a gap; pulled earlier (lead and
    gaps shrunk) when they would overrun the scene, never before 0."""
    if not durations:
        return []
    speech = sum(durations)
    room = scene_s - speech
    gaps = len(durations) - 1
    if room < lead_s + gap_s * gaps + 0.1:  # squeeze: share what room there is
        share = max(0.0, room - 0.05) / (gaps + 2)
        lead_s, gap_s = share, share
    starts, t = [], lead_s
    for duration in durations:
        starts.append(round(t, 4))
        t += duration + gap_s
    return starts


def lipsync_windows(frames: int, window_frames: int) -> tuple[list[int], list[int]]:
    """Frames per window (near-equal, each at most ``window_frames``) and the 4n+1 length generated for each."""
    if frames < 1:
        raise ValueError(f"lip sync of {frames} frames")
    count = math.ceil(frames / window_frames)
    base, extra = divmod(frames, count)
    windows = [base + (1 if i < extra else 0) for i in range(count)]
    return windows, [four_n_plus_one(max(w, 5)) for w in windows]


def lipsync_plan(scene: Scene, plan: ScenePlan, line_starts: list[float], durations: list[float], fps: float,
                 window_frames: int) -> LipSyncPlan | None:
    """The lip-synced tail of a scene whose lines include an on-screen speaker's; None when none speaks on screen.

    A turn is a run of on-screen lines by one speaker (off-screen lines do not end it); a new turn starts at the
    frame halfway through the gap between the previous turn's last line and its first, and every turn is cut
    into windows of at most ``window_frames``. A turn with no frame left before the scene's end is dropped."""
    lines = sorted((start, duration, line.speaker) for line, start, duration
                   in zip(scene.dialogue, line_starts, durations, strict=True) if line.speaker in scene.characters)
    if not lines:
        return None
    start = min(plan.frames - 1, math.floor(lines[0][0] * fps))
    turns: list[tuple[int, str]] = [(start, lines[0][2])]  # (first frame, speaker)
    said_until = lines[0][0] + lines[0][1]
    for at, duration, speaker in lines[1:]:
        if speaker != turns[-1][1]:
            cut = round(fps * (min(said_until, at) + at) / 2)
            cut = max(cut, turns[-1][0] + 1)
            if cut < plan.frames:
                turns.append((cut, speaker))
        said_until = at + duration
    windows: list[int] = []
    lengths: list[int] = []
    speakers: list[str] = []
    for (first, speaker), (end, _) in itertools.pairwise([*turns, (plan.frames, "")]):
        frames, generated = lipsync_windows(end - first, window_frames)
        windows += frames
        lengths += generated
        speakers += [speaker] * len(frames)
    return LipSyncPlan(start=start, windows=windows, lengths=lengths, speakers=speakers)


def placements(characters: list[str]) -> dict[str, str]:
    """Where each on-screen character stands, left to right in the scene's order ('' for one alone)."""
    count = len(characters)
    if count < 2:
        return dict.fromkeys(characters, "")
    if count <= 3:
        places = ["on the left", "in the middle", "on the right"] if count == 3 else ["on the left", "on the right"]
        return dict(zip(characters, places, strict=True))
    ordinal = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
    return {name: f"{ordinal[i] if i < len(ordinal) else f'{i + 1}th'} from the left"
            for i, name in enumerate(characters)}


def placement_text(characters: list[str]) -> str:
    """The keyframe's staging of two or more characters ("Mina on the left, Jun on the right"); '' otherwise."""
    places = placements(characters)
    if len(places) < 2:
        return ""
    return ", ".join(f"{name} {place}" for name, place in places.items())


def keyframe_identities(characters: list[str], identified: Collection[str], *, posed: bool = False) -> list[str]:
    """Whose identity a scene's keyframe carries, left first: the first two of ``characters`` (the scene's order,
    which is also left to right) that are in ``identified`` (the cast members with a LoRA), the first alone when
    the keyframe is posed (the pose template holds one identity); [] when none is on screen. A third character and
    later ones come from the prompt only."""
    on_screen = [name for name in characters if name in identified]
    return on_screen[:1] if posed else on_screen[:2]


def speaker_prompt(speaker: str, characters: list[str]) -> str:
    """Who a lip-sync window animates, and where: "Mina (on the left) speaks to Jun (on the right); Jun listens"."""
    places = placements(characters)
    others = [name for name in characters if name != speaker]
    if not others or speaker not in places:
        return f"{speaker} speaks"
    listeners = [f"{name} ({places[name]})" for name in others]
    who = " and ".join(others)
    return (f"{speaker} ({places[speaker]}) speaks to {' and '.join(listeners)}; "
            f"{who} {'listens' if len(others) == 1 else 'listen'}")


def shot_identity(scene: Scene, segment: SegmentPlan, context: dict[str, object], previous: str | None) -> str:
    """What makes a shot this shot: its scene's fields, its segment, the production's context (style, size,
    seed, cast identity), and the shot it continues from. A different identity is a new take."""
    return canonical_sha256({
        "scene": scene.model_dump(mode="json", exclude={"number"}),
        "segment": segment.model_dump(mode="json"),
        "context": context,
        "previous": previous,
    })
