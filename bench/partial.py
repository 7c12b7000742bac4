"""Partial re-runs of a production: what one edit re-executes against the full run, and what it costs in wall time.

    .venv/bin/python bench/partial.py [--duration 10] [--size 320]

On embedded preview workers (no configuration) and a temporary store: a character with a LoRA, a full production
from a brief, then three edits of its stored script, each produced from the edited copy (``--script``):
one scene's motion prompt, the music mood, one dialogue line. Prints, per case, the stages executed (GPU and all)
against the full run's and the wall-time ratio; target: no unchanged GPU job re-executed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _executed(result: Any, kind: str | None = None) -> list[str]:
    prefix = f"{result.slug}-v{result.version}-"
    return sorted(str(r["job"]).removeprefix(prefix) for r in result.jobs
                  if r["status"] == "executed" and (kind is None or r["kind"] == kind))


async def main(duration: float, size: int) -> int:
    from flows.character import character_flow
    from flows.video import video_flow
    from reelforge.storage import LocalStore

    await character_flow(name="Mina", variations=1, intro=False, width=256, height=256, lora_steps=8, lora_rank=4)
    common: dict[str, Any] = {"width": size, "height": size, "production": "bench-partial"}
    full = await video_flow(brief="Mina opens a tiny bakery at dawn", duration=duration, characters="Mina", **common)
    store = LocalStore(Path(os.environ["REELFORGE_STORE"]))
    script = json.loads(store.read_bytes(full.script_key))
    spoken = next(i for i, s in enumerate(script["scenes"]) if any(d["speaker"] in s["characters"]
                                                                   for d in s["dialogue"]))

    def motion(s: dict[str, Any]) -> None:
        s["scenes"][spoken]["motion_prompt"] = "Mina kneads dough, flour in the air"

    def mood(s: dict[str, Any]) -> None:
        s["audio_mood"] = "dark synthwave, driving"

    def line(s: dict[str, Any]) -> None:
        s["scenes"][spoken]["dialogue"][0]["text"] = s["scenes"][spoken]["dialogue"][0]["text"].rstrip(".!?") + "!"

    folder = Path(tempfile.mkdtemp(prefix="partial-"))
    rows: list[tuple[str, Any]] = []
    for name, edit in ((f"motion prompt of scene {spoken + 1}", motion), ("music mood", mood),
                       (f"one line of scene {spoken + 1}", line)):
        edited = json.loads(json.dumps(script))
        edit(edited)
        path = folder / f"{len(rows)}.json"
        path.write_text(json.dumps(edited, ensure_ascii=False), encoding="utf-8")
        result = await video_flow(script=str(path), **common)
        rows.append((name, result))
    full_gpu, full_all = len(_executed(full, "gpu")), len(full.jobs)
    print(f"\nfull run: {len(full.jobs)} stages ({full_gpu} GPU), {full.executed} executed, wall {full.wall_s:.1f} s")
    print(f"{'case':32} {'GPU executed':>14} {'all executed':>14} {'wall':>8} {'ratio':>6}  re-executed")
    for name, result in rows:
        gpu = _executed(result, "gpu")
        ratio = result.wall_s / full.wall_s if full.wall_s else 0.0
        print(f"{name:32} {len(gpu):>6} / {full_gpu:<5} {result.executed:>6} / {full_all:<5} {result.wall_s:>7.1f}s "
              f"{ratio:>6.2f}  {', '.join(_executed(result))}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=320)
    args = parser.parse_args()
    os.environ.setdefault("REELFORGE_STORE", tempfile.mkdtemp(prefix="partial-store-"))
    os.environ.setdefault("REELFORGE_PREVIEW_LATENCY", "gpu:0.05")
    os.environ.setdefault("REELFORGE_DEDUP_RETRIES", "0")
    raise SystemExit(asyncio.run(main(args.duration, args.size)))
