"""Identity scoring without model weights: the pure score rule, the ``appearance`` scorer on files, the
registry and errors, and the preview worker's half (identities carried by LoRAs, drawn on the subject card)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import call
from PIL import Image, ImageEnhance
from safetensors.numpy import save_file

from reelforge.identity import (
    AppearanceScorer,
    Embedded,
    IdentityInputError,
    IdentityScorer,
    IdentityScores,
    NoUsableReference,
    ScorerUnavailable,
    UnknownScorer,
    build_scores,
    scorer_by_name,
)
from reelforge.identity import face as face_module
from reelforge.preview import modelfiles
from reelforge.preview.nodes.loaders import lora_identity, safetensors_metadata
from reelforge.preview.registry import NodeRegistry, WorkerDirs, default_registry
from reelforge.preview.render.image import (
    background,
    card_box,
    face_card,
    identity_card,
    learn_identity,
    read_card,
    render_image,
)
from reelforge.preview.values import (
    CARD_CELLS,
    IDENTITY_METADATA_KEY,
    Identity,
    Model,
    Recipe,
    identity_from_metadata,
    identity_metadata,
)

SDXL = "sd_xl_base_1.0.safetensors"


def key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def save(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(np.clip(array * 255 + 0.5, 0, 255).astype(np.uint8)).save(path)
    return path


def picture(identity: Identity | None, *, seed: int = 1, prompt: str = "someone in a park", size: int = 256,
            strength: float = 1.0) -> np.ndarray:
    model = Model(SDXL, "sdxl")
    if identity is not None:
        model = model.with_lora("char.safetensors", strength, identity)
    return render_image(Recipe(kind="image", width=size, height=size, prompt=prompt, seed=seed, model=model))


# -- the score rule -------------------------------------------------------------------------------------


def test_build_scores_mean_best_unscorable_and_failing() -> None:
    refs = [Embedded(Path("r1.png"), 1.0), Embedded(Path("r2.png"), 0.5), Embedded(Path("r3.png"), None, "flat")]
    cands = [Embedded(Path("a.png"), 1.0), Embedded(Path("b.png"), 0.0), Embedded(Path("c.png"), None, "no face found")]
    result = build_scores("toy", 0.6, refs, cands, lambda r, c: 1.0 - abs(r - c))
    a, b, c = result.candidates
    assert (a.score, a.best, a.passed) == (0.75, 1.0, True)
    assert (b.score, b.best, b.passed) == (0.25, 0.5, False) and "below threshold 0.600" in (b.reason or "")
    assert (c.scorable, c.score, c.passed, c.reason) == (False, None, False, "no face found")
    assert result.overall == pytest.approx((0.75 + 0.25 + 0.0) / 3, abs=1e-6)  # unscorable counts as 0
    assert not result.passed and result.failing == [Path("b.png"), Path("c.png")]
    assert [r.scorable for r in result.references] == [True, True, False]
    assert result.best == a
    assert IdentityScores.model_validate_json(result.model_dump_json()) == result  # a stage record as it is
    clipped = build_scores("toy", 0.5, refs[:1], cands[:1], lambda r, c: 3.0)
    assert clipped.candidates[0].score == 1.0


def test_build_scores_refuses_nothing_to_compare() -> None:
    with pytest.raises(IdentityInputError, match="no candidate"):
        build_scores("toy", 0.5, [Embedded(Path("r.png"), 1.0)], [], lambda r, c: 1.0)
    with pytest.raises(NoUsableReference) as info:
        build_scores("toy", 0.5, [Embedded(Path("r.png"), None, "no face found")], [Embedded(Path("c"), 1.0)],
                     lambda r, c: 1.0)
    assert info.value.reasons == ["no face found"] and info.value.paths == [Path("r.png")]
    assert "r.png: no face found" in str(info.value) and info.value.scorer == "toy"


# -- the appearance scorer ------------------------------------------------------------------------------


def test_appearance_scores_the_same_subject_high_through_alterations(tmp_path: Path) -> None:
    me = picture(Identity(key=key("me")))
    ref = save(me, tmp_path / "ref.png")
    img = Image.open(ref)
    variants = [
        img.resize((512, 512)),  # another size
        ImageEnhance.Brightness(img).enhance(1.2),
        img.crop((6, 6, 250, 250)),  # re-framed slightly
    ]
    paths = [tmp_path / f"v{i}.png" for i in range(len(variants))]
    for v, p in zip(variants, paths, strict=True):
        v.save(p)
    img.convert("RGB").save(tmp_path / "v.jpg", quality=70)
    paths.append(tmp_path / "v.jpg")
    # Another scene: different prompt and seed, the same LoRA identity.
    paths.append(save(picture(Identity(key=key("me")), seed=9, prompt="at the beach, sunset"), tmp_path / "s.png"))
    result = AppearanceScorer().score([ref], paths)
    assert result.passed, [c.score for c in result.candidates]
    assert min(c.score or 0 for c in result.candidates) > 0.85


def test_appearance_scores_other_subjects_low(tmp_path: Path) -> None:
    ref = save(picture(Identity(key=key("me"))), tmp_path / "ref.png")
    others = [save(picture(Identity(key=key(f"other{i}")), seed=i), tmp_path / f"o{i}.png") for i in range(8)]
    own = [save(picture(None, seed=i), tmp_path / f"n{i}.png") for i in range(8)]  # no LoRA: its own subject
    result = AppearanceScorer().score([ref], [*others, *own])
    assert result.failing == [*others, *own]
    assert max(c.score or 0 for c in result.candidates) < 0.7


def test_appearance_unscorable_and_missing_files(tmp_path: Path) -> None:
    ref = save(picture(Identity(key=key("me"))), tmp_path / "ref.png")
    flat = save(np.full((64, 64, 3), 0.4, np.float32), tmp_path / "flat.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    result = AppearanceScorer().score([ref], [flat, junk])
    reasons = [c.reason or "" for c in result.candidates]
    assert reasons[0].startswith("flat image region") and reasons[1].startswith("unreadable image")
    assert not result.passed and result.overall == 0.0
    with pytest.raises(NoUsableReference):
        AppearanceScorer().score([flat], [ref])
    with pytest.raises(IdentityInputError) as info:
        AppearanceScorer().score([tmp_path / "gone.png"], [ref, tmp_path / "gone2.png"])
    assert info.value.paths == [tmp_path / "gone.png", tmp_path / "gone2.png"]  # every missing file at once


def test_registry_and_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    default = scorer_by_name()
    assert isinstance(default, IdentityScorer) and (default.name, default.threshold) == ("appearance", 0.7)
    assert scorer_by_name("appearance", threshold=0.8).threshold == 0.8
    with pytest.raises(UnknownScorer) as info:
        scorer_by_name("clip")
    assert info.value.known == ["appearance", "face"] and "'clip'" in str(info.value)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        scorer_by_name(threshold=1.5)
    # Without dlib the face scorer names the extra to install (whether or not it is installed here).
    monkeypatch.setattr(face_module, "_models", None)
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(ScorerUnavailable) as unavailable:
        scorer_by_name("face")
    assert "reelforge[identity]" in str(unavailable.value) and unavailable.value.scorer == "face"


# -- the preview worker's half ----------------------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path: Path) -> WorkerDirs:
    d = WorkerDirs(tmp_path / "worker")
    d.create()
    modelfiles.configure(d, None)
    return d


def test_identity_metadata_round_trip_and_malformed_values() -> None:
    card = np.random.default_rng(0).random((CARD_CELLS, CARD_CELLS, 3)).astype(np.float32)
    learned = Identity.learned(card)
    meta = identity_metadata(learned)
    assert identity_from_metadata(meta) == learned
    stored = learned.card_array()
    assert stored is not None and np.abs(stored - card).max() <= 0.5 / 255 + 1e-6
    for bad in ({}, {IDENTITY_METADATA_KEY: "card32:!!"}, {IDENTITY_METADATA_KEY: "card32:AAAA"},
                {IDENTITY_METADATA_KEY: "card8:" + meta[IDENTITY_METADATA_KEY][7:]}):
        assert identity_from_metadata(bad) is None
    with pytest.raises(ValueError):
        identity_metadata(Identity(key=key("generated")))
    with pytest.raises(ValueError):
        Identity.learned(np.zeros((4, 4, 3)))


def test_lora_identity_learned_else_file_content_else_name(tmp_path: Path) -> None:
    card = Identity.learned(np.full((CARD_CELLS, CARD_CELLS, 3), 0.3, np.float32))
    learned = tmp_path / "learned.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, str(learned), metadata=identity_metadata(card))
    plain_a, plain_b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, str(plain_a))
    save_file({"w": np.ones(2, np.float32)}, str(plain_b))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"x")
    assert lora_identity(learned, "learned.safetensors") == card
    assert lora_identity(plain_a, "a").key == hashlib.sha256(plain_a.read_bytes()).hexdigest()
    assert lora_identity(plain_a, "a") != lora_identity(plain_b, "a")  # content, not name
    assert lora_identity(junk, "junk").key == hashlib.sha256(b"x").hexdigest() and safetensors_metadata(junk) == {}
    assert lora_identity(None, "style.safetensors") == lora_identity(None, "style.safetensors")
    assert lora_identity(None, "style.safetensors") != lora_identity(None, "other.safetensors")


def test_lora_loaders_attach_the_identity(dirs: WorkerDirs) -> None:
    reg: NodeRegistry = default_registry()
    folder = dirs.models / "loras"
    folder.mkdir(parents=True)
    card = Identity.learned(np.full((CARD_CELLS, CARD_CELLS, 3), 0.6, np.float32))
    save_file({"w": np.zeros(2, np.float32)}, str(folder / "mina.safetensors"), metadata=identity_metadata(card))
    (model, clip, _vae) = (Model(SDXL, "sdxl"), None, None)
    m1, _ = call(reg, "LoraLoader", dirs, model=model, clip=clip, lora_name="mina.safetensors",
                 strength_model=0.8, strength_clip=1.0).outputs
    assert m1.loras == (("mina.safetensors", 0.8),) and m1.identities == ((card, 0.8),)
    (m2,) = call(
        reg, "LoraLoaderModelOnly", dirs, model=model, lora_name="mina.safetensors", strength_model=1.0
    ).outputs
    assert m2.identities == ((card, 1.0),)
    same, _ = call(reg, "LoraLoader", dirs, model=model, clip=clip, lora_name="mina.safetensors",
                   strength_model=0, strength_clip=0).outputs
    assert same is model  # ComfyUI: a LoRA at strength 0 is not applied


def test_the_card_shows_who_the_loras_say(tmp_path: Path) -> None:
    a, b = Identity(key=key("a")), Identity(key=key("b"))
    x0, y0, x1, y1 = card_box(256, 256)
    assert (x1 - x0, y1 - y0) == (128, 128)
    full = picture(a)
    assert np.abs(full[y0:y1, x0:x1] - face_card(a.key, 128)).max() < 1e-6  # in front of the caption
    half = picture(a, strength=0.5)[y0:y1, x0:x1]
    own = picture(None)[y0:y1, x0:x1]
    assert np.abs(half - (0.5 * face_card(a.key, 128) + 0.5 * own)).max() < 1e-5
    both = Recipe(kind="image", width=256, height=256, prompt="p", seed=1,
                  model=Model(SDXL).with_lora("a", 1.0, a).with_lora("b", 1.0, b))
    card = background(both)[y0:y1, x0:x1]
    assert np.abs(card - (0.5 * face_card(a.key, 128) + 0.5 * face_card(b.key, 128))).max() < 1e-5
    negative = picture(a, strength=-1.0)[y0:y1, x0:x1]
    own_negative = render_image(Recipe(kind="image", width=256, height=256, prompt="someone in a park", seed=1,
                                       model=Model(SDXL, "sdxl").with_lora("char.safetensors", -1.0, a)))
    assert np.array_equal(negative, own_negative[y0:y1, x0:x1])
    assert np.abs(negative - face_card(a.key, 128)).mean() > 0.05  # a negative strength draws nothing of it


def test_img2img_keeps_the_start_images_card() -> None:
    start = picture(Identity(key=key("base")))
    x0, y0, x1, y1 = card_box(256, 256)

    def variation(denoise: float) -> np.ndarray:
        recipe = Recipe(kind="image", width=256, height=256, prompt="another pose", seed=5, model=Model(SDXL),
                        denoise=denoise, start_image=start)
        return background(recipe)[y0:y1, x0:x1]

    assert np.abs(variation(0.4) - start[y0:y1, x0:x1]).max() < 1e-5  # 2 * (1 - 0.4) >= 1: kept whole
    kept = variation(0.55)  # the variation templates' default: 0.9 of the start's card
    fresh = variation(1.0)
    assert np.abs(kept - (0.9 * start[y0:y1, x0:x1] + 0.1 * fresh)).max() < 1e-4


def test_learn_identity_is_the_mean_card_of_the_training_images() -> None:
    me = Identity(key=key("me"))
    images = np.stack([picture(me, seed=s, prompt=f"scene {s}") for s in range(3)])
    learned = learn_identity(images)
    assert learned.card and learned == learn_identity(images)
    stored = learned.card_array()
    assert stored is not None and np.abs(stored - read_card(images[0])).max() < 1.5 / 255  # the same card thrice
    assert np.abs(identity_card(learned, 128) - face_card(me.key, 128)).mean() < 0.06
    with pytest.raises(ValueError):
        learn_identity(np.zeros((0, 8, 8, 3)))
