"""The gallery artifact shows images the Prefect UI can load: thumbnails embedded as ``data:`` URIs for a local
store (an http page cannot load ``file://``), an object store's presigned URLs unchanged."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from PIL import Image, ImageStat

import tasks.artifacts
from reelforge.storage import LocalStore, StageRecord, StoredOutput
from tasks.artifacts import GalleryImage, gallery_markdown, publish_summary, thumbnail_data_uri

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(<([^>]*)>\)")


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    image = Image.new("RGB", (width, height), colour)
    image.paste((255 - colour[0], 255 - colour[1], 255 - colour[2]), (0, 0, width // 2, height))  # two halves
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def record(job_id: str, outputs: list[StoredOutput]) -> StageRecord:
    return StageRecord(stage="character_variation_realistic", version="v", kind="gpu", job_id=job_id,
                       cache_key=job_id, outputs=outputs)


def output(ref: Any) -> StoredOutput:
    return StoredOutput(**ref.model_dump())


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What publish_summary sends to Prefect (captured instead of sent)."""
    sent: dict[str, Any] = {}

    async def markdown(**kwargs: Any) -> Any:
        sent["markdown"] = kwargs
        return uuid4()

    async def table(**kwargs: Any) -> Any:
        sent["table"] = kwargs
        return uuid4()

    monkeypatch.setattr(tasks.artifacts, "acreate_markdown_artifact", markdown)
    monkeypatch.setattr(tasks.artifacts, "acreate_table_artifact", table)
    return sent


async def test_local_store_gallery_embeds_loadable_thumbnails(tmp_path: Path, published: dict[str, Any]) -> None:
    store = LocalStore(tmp_path / "store")
    base = store.put_bytes(png(1024, 768, (20, 120, 200)), "characters/x/v1/base/a.png")
    var = store.put_bytes(png(300, 300, (200, 30, 60)), "characters/x/v1/variations/b.png")
    voice = store.put_bytes(b"fLaC not an image", "characters/x/v1/voice/c.flac")
    records = [record("x-v1-base", [output(base)]), record("x-v1-var00", [output(var)]),
               record("x-v1-voice", [output(voice)])]

    await publish_summary(records, store, key="character-x", title="X v1")

    text = published["markdown"]["markdown"]
    assert published["markdown"]["key"] == "character-x-gallery"
    assert "file://" not in text
    links = IMAGE_LINK.findall(text)
    assert len(links) == 2  # the two images, not the audio
    sizes = []
    for link in links:
        assert link.startswith("data:image/"), link[:40]
        header, payload = link.split(",", 1)
        data = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(data)) as thumb:
            assert thumb.format in {"PNG", "JPEG"} and header == f"data:image/{thumb.format.lower()};base64"
            assert max(thumb.size) <= tasks.artifacts.THUMBNAIL_PX
            sizes.append(thumb.size)
            assert ImageStat.Stat(thumb.convert("L")).stddev[0] > 1  # the picture, not a flat fill
    assert sizes == [(256, 192), (256, 256)]  # aspect kept: 1024x768 -> 256x192; 300x300 -> 256x256
    # The full-size file's path is shown as text (not a link the page would fail to load).
    assert f"`{store.path_for(base.key)}`" in text and base.key in text and var.key in text


async def test_gallery_over_budget_lists_paths_without_broken_images(
    tmp_path: Path, published: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "store")
    refs = [store.put_bytes(png(200, 200, (i * 40, 90, 90)), f"characters/x/v1/variations/{i}.png") for i in range(3)]
    one = len(thumbnail_data_uri(store.read_bytes(refs[0].key)))
    monkeypatch.setattr(tasks.artifacts, "MAX_EMBEDDED_BYTES", one * 2 + 10)  # room for two thumbnails

    await publish_summary([record(f"v{i}", [output(r)]) for i, r in enumerate(refs)], store, key="k", title="t")

    text = published["markdown"]["markdown"]
    assert len(IMAGE_LINK.findall(text)) == 2
    assert text.count("_(no preview)_") == 1 and f"`{store.path_for(refs[2].key)}`" in text
    assert "file://" not in text


class PresigningStore:
    """An object store's answers: ``url`` is a presigned https URL; bytes are never read for the gallery."""

    def url(self, key: str, *, expires_s: int | None = None) -> str:
        return f"https://bucket.s3.example/{key}?X-Amz-Signature=abc"

    def read_bytes(self, key: str) -> bytes:
        raise AssertionError("an object store's gallery must not download images")


async def test_object_store_gallery_keeps_presigned_urls(published: dict[str, Any]) -> None:
    out = StoredOutput(key="characters/x/v1/base/a.png", uri="s3://bucket/characters/x/v1/base/a.png",
                       sha256="0" * 64, size=10, media_type="image/png", kind="image")
    await publish_summary([record("x-v1-base", [out])], PresigningStore(), key="k", title="t")  # type: ignore[arg-type]
    links = IMAGE_LINK.findall(published["markdown"]["markdown"])
    assert links == ["https://bucket.s3.example/characters/x/v1/base/a.png?X-Amz-Signature=abc"]


def test_gallery_markdown_escapes_and_handles_no_images() -> None:
    assert "_No images._" in gallery_markdown("Empty", [])
    text = gallery_markdown("A [b] | c", [GalleryImage("cap|x", "k", None, location="/p")])
    assert text.startswith("# A \\[b\\] \\| c") and "_(no preview)_" in text and "![" not in text
