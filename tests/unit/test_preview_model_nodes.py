"""The preview worker's model, sampling, upscale and LoRA-training nodes, run directly over temporary folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import call
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

from reelforge.preview import modelfiles
from reelforge.preview.latency import GPU_STEP_SECONDS, parse_latency
from reelforge.preview.nodes.loaders import model_family, upscale_factor
from reelforge.preview.nodes.sampling import ControlApplied
from reelforge.preview.nodes.training import LoraWeights
from reelforge.preview.registry import NodeRegistry, WorkerDirs, default_registry
from reelforge.preview.render.image import background, render_image
from reelforge.preview.values import Clip, Cond, Model, Recipe, UpscaleModel, Vae, recipe_of
from reelforge.templates.lock import ComfyLock, ComfyUIPin, ModelFile

SDXL = "sd_xl_base_1.0.safetensors"
FLUX = "flux1-dev.safetensors"


def lock_with(*models: tuple[str, str]) -> ComfyLock:
    return ComfyLock(
        comfyui=ComfyUIPin(repo="https://github.com/comfyanonymous/ComfyUI", commit="a125cd84", version="0.3.64"),
        models=[ModelFile(folder=f, name=n, url=f"https://example.invalid/{n}") for f, n in models],
    )


LOCK = lock_with(
    ("checkpoints", SDXL),
    ("diffusion_models", FLUX),
    ("text_encoders", "clip_l.safetensors"),
    ("text_encoders", "t5xxl_fp16.safetensors"),
    ("vae", "ae.safetensors"),
    ("controlnet", "controlnet-openpose-sdxl-1.0.safetensors"),
    ("upscale_models", "4x-UltraSharp.pth"),
    ("loras", "style_ink.safetensors"),
    ("clip", "legacy_clip.safetensors"),
)


@pytest.fixture
def dirs(tmp_path: Path) -> WorkerDirs:
    d = WorkerDirs(tmp_path / "worker")
    d.create()
    modelfiles.configure(d, LOCK)
    return d


@pytest.fixture
def reg() -> NodeRegistry:
    return default_registry()




def sdxl_image(
    reg: NodeRegistry,
    dirs: WorkerDirs,
    prompt: str = "a red fox in the snow",
    *,
    seed: int = 7,
    width: int = 256,
    height: int = 192,
    batch: int = 1,
    lora: str | None = None,
) -> np.ndarray:
    model, clip, vae = call(reg, "CheckpointLoaderSimple", dirs, ckpt_name=SDXL).outputs
    if lora is not None:
        model, clip = call(
            reg, "LoraLoader", dirs, model=model, clip=clip, lora_name=lora, strength_model=0.8, strength_clip=1.0
        ).outputs
    pos = call(reg, "CLIPTextEncode", dirs, clip=clip, text=prompt).outputs[0]
    neg = call(reg, "CLIPTextEncode", dirs, clip=clip, text="blurry").outputs[0]
    lat = call(reg, "EmptyLatentImage", dirs, width=width, height=height, batch_size=batch).outputs[0]
    sampled = call(
        reg,
        "KSampler",
        dirs,
        model=model,
        seed=seed,
        steps=20,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        positive=pos,
        negative=neg,
        latent_image=lat,
        denoise=1.0,
    ).outputs[0]
    image: np.ndarray = call(reg, "VAEDecode", dirs, samples=sampled, vae=vae).outputs[0]
    return image


# -- model listings -------------------------------------------------------------------------------------


def test_model_files_union_of_disk_and_lock_minus_missing(dirs: WorkerDirs) -> None:
    (dirs.models / "loras").mkdir(parents=True)
    (dirs.models / "loras" / "mine.safetensors").write_bytes(b"x")
    (dirs.output / "loras").mkdir(parents=True)
    (dirs.output / "loras" / "trained.safetensors").write_bytes(b"x")
    lock = {"loras": ["style_ink.safetensors"], "checkpoints": [SDXL]}
    assert modelfiles.model_files(dirs, "loras", lock, ()) == [
        "mine.safetensors",
        "style_ink.safetensors",
        "trained.safetensors",
    ]
    assert modelfiles.model_files(dirs, "loras", lock, ["loras/style_ink.safetensors"]) == [
        "mine.safetensors",
        "trained.safetensors",
    ]
    assert modelfiles.model_files(dirs, "checkpoints", lock, [f"checkpoints/{SDXL}"]) == []
    assert modelfiles.model_files(dirs, "nope", lock, ()) is None
    # A folder key only the lock knows (a custom pack's) also lists models/<key>.
    (dirs.models / "tts_voices").mkdir()
    (dirs.models / "tts_voices" / "extra.safetensors").write_bytes(b"x")
    assert modelfiles.model_files(dirs, "tts_voices", {"tts_voices": ["v.bin"]}, ()) == ["extra.safetensors", "v.bin"]
    # Legacy lock folder keys count for their current key; the legacy key itself is no folder.
    assert modelfiles.listed(dirs, "text_encoders") == [
        "clip_l.safetensors",
        "legacy_clip.safetensors",
        "t5xxl_fp16.safetensors",
    ]
    assert modelfiles.model_files(dirs, "clip", {}, ()) is None
    with pytest.raises(ValueError, match="folder/name"):
        modelfiles.parse_missing(["no-folder"])


def test_loader_combos_list_lock_models(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    info = reg.object_info(dirs)
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [SDXL]
    assert info["UNETLoader"]["input"]["required"]["unet_name"][0] == [FLUX]
    assert info["VAELoader"]["input"]["required"]["vae_name"][0] == ["ae.safetensors", "pixel_space"]
    assert info["UpscaleModelLoader"]["input"]["required"]["model_name"][1]["options"] == ["4x-UltraSharp.pth"]
    assert info["LoraLoader"]["input"]["required"]["lora_name"][0] == ["style_ink.safetensors"]
    assert info["TrainLoraNode"]["input"]["required"]["existing_lora"][0] == ["style_ink.safetensors", "[None]"]
    (dirs.input / "set_a" / "10_faces").mkdir(parents=True)
    info = reg.object_info(dirs)
    assert info["LoadImageTextSetFromFolderNode"]["input"]["required"]["folder"][0] == ["set_a", "set_a/10_faces"]


def test_loaders_return_records_and_refuse_unknown_names(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    model, clip, vae = call(reg, "CheckpointLoaderSimple", dirs, ckpt_name=SDXL).outputs
    assert model == Model(SDXL, "sdxl") and clip.names == (SDXL,) and vae == Vae(SDXL)
    (unet,) = call(reg, "UNETLoader", dirs, unet_name=FLUX, weight_dtype="fp8_e4m3fn").outputs
    assert unet.family == "flux" and ("weight_dtype", "fp8_e4m3fn") in unet.patches
    (dual,) = call(
        reg, "DualCLIPLoader", dirs, clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors", type="flux"
    ).outputs
    assert dual == Clip(("clip_l.safetensors", "t5xxl_fp16.safetensors"), type="flux")
    (up,) = call(reg, "UpscaleModelLoader", dirs, model_name="4x-UltraSharp.pth").outputs
    assert up == UpscaleModel("4x-UltraSharp.pth", 4)
    with pytest.raises(FileNotFoundError, match=r"Model in folder 'checkpoints' with filename 'gone\.safetensors'"):
        call(reg, "CheckpointLoaderSimple", dirs, ckpt_name="gone.safetensors")
    m2, c2 = call(
        reg, "LoraLoader", dirs, model=model, clip=clip, lora_name="style_ink.safetensors",
        strength_model=0.5, strength_clip=0.25,
    ).outputs
    assert m2.loras == (("style_ink.safetensors", 0.5),) and c2.loras == (("style_ink.safetensors", 0.25),)
    (m3,) = call(
        reg, "LoraLoaderModelOnly", dirs, model=m2, lora_name="style_ink.safetensors", strength_model=1.0
    ).outputs
    assert len(m3.loras) == 2
    same = call(reg, "LoraLoader", dirs, model=model, clip=clip, lora_name="x", strength_model=0, strength_clip=0)
    assert same.outputs == (model, clip)


def test_family_and_upscale_factor_from_names() -> None:
    assert model_family(SDXL) == "sdxl" and model_family(FLUX) == "flux"
    assert model_family("wan2.2_ti2v_5B_fp16.safetensors") == "wan22_5b"
    assert model_family("wan2.1_flf2v_720p_14B_fp16.safetensors") == "wan21_flf2v"
    assert model_family("ace_step_v1_3.5b.safetensors") == "ace_step"
    assert upscale_factor("RealESRGAN_x2plus.pth") == 2 and upscale_factor("4x_foolhardy_Remacri.pth") == 4
    assert upscale_factor("mystery.pth") == 4


# -- conditioning, latents, sampler -------------------------------------------------------------------


def test_conditioning_nodes(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    clip = Clip(("clip_l.safetensors",))
    (cond,) = call(reg, "CLIPTextEncode", dirs, clip=clip, text="hello").outputs
    assert [c.text for c in cond] == ["hello"]
    with pytest.raises(RuntimeError, match="clip input is invalid: None"):
        call(reg, "CLIPTextEncode", dirs, clip=None, text="x")
    (guided,) = call(reg, "FluxGuidance", dirs, conditioning=cond, guidance=3.5).outputs
    assert guided[0].get("guidance") == 3.5
    (zero,) = call(reg, "ConditioningZeroOut", dirs, conditioning=guided).outputs
    assert zero[0].text == "" and zero[0].get("guidance") == 3.5
    pose = np.zeros((1, 32, 32, 3), np.float32)
    pos, neg = call(
        reg, "ControlNetApplyAdvanced", dirs, positive=cond, negative=zero, control_net=_cn(), image=pose,
        strength=0.7, start_percent=0.0, end_percent=1.0,
    ).outputs
    applied = pos[0].get("control")[0]
    assert isinstance(applied, ControlApplied) and applied.strength == 0.7 and applied.image.shape == (32, 32, 3)
    assert neg[0].get("control") is not None
    untouched = call(
        reg, "ControlNetApplyAdvanced", dirs, positive=cond, negative=zero, control_net=_cn(), image=pose,
        strength=0.0, start_percent=0.0, end_percent=1.0,
    ).outputs
    assert untouched == (cond, zero)
    (shifted,) = call(reg, "ModelSamplingSD3", dirs, model=Model("m"), shift=8.0).outputs
    (again,) = call(reg, "ModelSamplingAuraFlow", dirs, model=shifted, shift=1.73).outputs
    assert again.patches == (("model_sampling", ("auraflow", 1.73)),)


def _cn() -> Any:
    from reelforge.preview.values import ControlNet

    return ControlNet("controlnet-openpose-sdxl-1.0.safetensors")


def test_latent_shapes_and_recipes(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    (lat,) = call(reg, "EmptyLatentImage", dirs, width=1024, height=768, batch_size=2).outputs
    assert lat["samples"].shape == (2, 4, 96, 128) and recipe_of(lat).kind == "image"
    assert (recipe_of(lat).width, recipe_of(lat).height) == (1024, 768)
    (lat3,) = call(reg, "EmptySD3LatentImage", dirs, width=1024, height=1024, batch_size=1).outputs
    assert lat3["samples"].shape == (1, 16, 128, 128)
    pixels = np.full((1, 100, 90, 3), 0.5, np.float32)
    (enc,) = call(reg, "VAEEncode", dirs, pixels=pixels, vae=Vae("ae.safetensors")).outputs
    assert enc["samples"].shape == (1, 16, 12, 11)
    r = recipe_of(enc)
    assert (r.width, r.height) == (88, 96) and r.start_image is not None and r.start_image.shape == (96, 88, 3)


def test_ksampler_fills_the_recipe_and_keeps_video_fields(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    model = Model(SDXL, "sdxl", loras=(("style_ink.safetensors", 0.8),))
    pos = [Cond("a castle", extras=(("clip", Clip(("c",), loras=(("style_ink.safetensors", 1.0),))),))]
    video = {"samples": np.zeros((1, 48, 4, 8, 8), np.float32), "recipe": Recipe(kind="video", frames=13)}
    (out,) = call(
        reg, "KSampler", dirs, model=model, seed=5, steps=4, cfg=5.0, sampler_name="euler", scheduler="simple",
        positive=pos, negative=[Cond("")], latent_image=video, denoise=1.0,
    ).outputs
    r = recipe_of(out)
    assert (r.kind, r.frames, r.prompt, r.seed, r.steps, r.model) == ("video", 13, "a castle", 5, 4, model)
    assert r.extras["cfg"] == 5.0 and r.extras["clip_loras"] == "style_ink.safetensors:1"
    assert out["samples"].shape == (1, 48, 4, 8, 8)
    (adv,) = call(
        reg, "KSamplerAdvanced", dirs, model=model, add_noise="enable", noise_seed=9, steps=20, cfg=5.0,
        sampler_name="euler", scheduler="simple", positive=pos, negative=pos, latent_image=video,
        start_at_step=10, end_at_step=10000, return_with_leftover_noise="disable",
    ).outputs
    assert recipe_of(adv).denoise == 0.5 and recipe_of(adv).seed == 9


# -- rendered images ------------------------------------------------------------------------------------


def test_sdxl_chain_image_is_deterministic(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    a = sdxl_image(reg, dirs)
    assert a.shape == (1, 192, 256, 3) and a.dtype == np.float32
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert np.array_equal(a, sdxl_image(reg, dirs))
    assert not np.array_equal(a, sdxl_image(reg, dirs, seed=8))
    assert not np.array_equal(a, sdxl_image(reg, dirs, "a blue fox in the snow"))
    assert not np.array_equal(a, sdxl_image(reg, dirs, lora="style_ink.safetensors"))
    batch = sdxl_image(reg, dirs, batch=2)
    assert batch.shape == (2, 192, 256, 3) and not np.array_equal(batch[0], batch[1])


def test_prompt_text_is_drawn(tmp_path: Path) -> None:
    recipe = Recipe(kind="image", width=512, height=512, prompt="a lighthouse at dusk, oil painting", seed=3)
    image = render_image(recipe)
    bare = background(recipe)
    top = np.abs(image[:120] - bare[:120]).max(axis=-1)
    middle = np.abs(image[200:400] - bare[200:400]).max(axis=-1)
    assert (top > 0.3).mean() > 0.02  # glyphs on the top panel
    assert middle.max() <= 1 / 255 + 1e-6  # the middle is the pattern only (8-bit rounding)
    # Near-white glyph pixels exist where the prompt is written.
    assert ((image[:120] > 0.9).all(axis=-1)).sum() > 200
    longer = render_image(Recipe(kind="image", width=512, height=512, prompt="a lighthouse at dusk, " * 6, seed=3))
    lines = lambda img: int(((img[:400] > 0.9).all(axis=-1).any(axis=1)).sum())  # noqa: E731
    assert lines(longer) > lines(image)  # wrapped over more lines
    empty = render_image(Recipe(kind="image", width=512, height=512, prompt="", seed=3))
    assert not np.array_equal(empty[:120], image[:120])
    Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "look.png")


def test_img2img_blends_the_start_image_and_control_overlay(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    start = np.zeros((1, 128, 128, 3), np.float32)
    start[:, :, :64] = 1.0  # white left half
    (lat,) = call(reg, "VAEEncode", dirs, pixels=start, vae=Vae(SDXL)).outputs
    model, clip = Model(SDXL, "sdxl"), Clip((SDXL,))
    pos = call(reg, "CLIPTextEncode", dirs, clip=clip, text="").outputs[0]

    def sample(denoise: float, positive: list[Cond]) -> np.ndarray:
        (out,) = call(
            reg, "KSampler", dirs, model=model, seed=1, steps=10, cfg=7.0, sampler_name="euler",
            scheduler="normal", positive=positive, negative=pos, latent_image=lat, denoise=denoise,
        ).outputs
        image: np.ndarray = call(reg, "VAEDecode", dirs, samples=out, vae=Vae(SDXL)).outputs[0][0]
        return image

    low, full = sample(0.2, pos), sample(1.0, pos)
    mid = slice(50, 80)
    assert low[mid, :64].mean() - low[mid, 64:].mean() > 0.5  # the start image shows through
    assert abs(full[mid, :64].mean() - full[mid, 64:].mean()) < 0.5
    pose = np.zeros((1, 128, 128, 3), np.float32)
    pose[:, 60:68, :, 1] = 1.0  # a green bar
    controlled, _ = call(
        reg, "ControlNetApplyAdvanced", dirs, positive=pos, negative=pos, control_net=_cn(), image=pose,
        strength=1.0, start_percent=0.0, end_percent=1.0,
    ).outputs
    with_pose = sample(1.0, controlled)
    assert with_pose[60:68, :, 1].mean() > with_pose[60:68, :, 0].mean() + 0.1


def test_upscale_nodes(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    image = np.random.default_rng(0).random((1, 16, 24, 3), dtype=np.float32)
    ultra = UpscaleModel("4x-UltraSharp.pth")
    (up,) = call(reg, "ImageUpscaleWithModel", dirs, upscale_model=ultra, image=image).outputs
    assert up.shape == (1, 64, 96, 3) and up.dtype == np.float32
    (up2,) = call(reg, "ImageUpscaleWithModel", dirs, upscale_model=UpscaleModel("x2.pth", 2), image=image).outputs
    assert up2.shape == (1, 32, 48, 3)
    (half,) = call(reg, "ImageScaleBy", dirs, image=up, upscale_method="bilinear", scale_by=0.5).outputs
    assert half.shape == (1, 32, 48, 3)


# -- LoRA training --------------------------------------------------------------------------------------


def make_dataset(dirs: WorkerDirs, name: str = "faces", count: int = 3) -> None:
    folder = dirs.input / name
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (64 + 8 * i, 64), (40 * i, 100, 200)).save(folder / f"img{i}.png")
        if i != 1:
            (folder / f"img{i}.txt").write_text(f"photo of sks person, pose {i}\n", encoding="utf-8")


def train(reg: NodeRegistry, dirs: WorkerDirs, **over: Any) -> tuple[Any, ...]:
    model, clip, vae = call(reg, "CheckpointLoaderSimple", dirs, ckpt_name=SDXL).outputs
    images, conds = call(
        reg, "LoadImageTextSetFromFolderNode", dirs, folder="faces", clip=clip, resize_method="Stretch",
        width=64, height=64,
    ).outputs
    (lat,) = call(reg, "VAEEncode", dirs, pixels=images, vae=vae).outputs
    inputs: dict[str, Any] = {
        "model": model, "latents": lat, "positive": conds, "batch_size": 1, "grad_accumulation_steps": 1,
        "steps": 16, "learning_rate": 0.0005, "rank": 8, "optimizer": "AdamW", "loss_function": "MSE", "seed": 0,
        "training_dtype": "bf16", "lora_dtype": "bf16", "algorithm": "LoRA", "gradient_checkpointing": True,
        "existing_lora": "[None]",
    }
    inputs.update(over)
    return call(reg, "TrainLoraNode", dirs, **inputs).outputs


def test_dataset_loader_images_and_captions(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    make_dataset(dirs)
    clip = Clip(("c",))
    images, conds = call(reg, "LoadImageTextSetFromFolderNode", dirs, folder="faces", clip=clip,
                         resize_method="Stretch", width=-1, height=-1).outputs
    assert images.shape == (3, 64, 64, 3)
    assert [c.text for c in conds] == ["photo of sks person, pose 0", "", "photo of sks person, pose 2"]
    with pytest.raises(ValueError, match="does not match the first image"):
        call(reg, "LoadImageTextSetFromFolderNode", dirs, folder="faces", clip=clip, resize_method="None",
             width=-1, height=-1)


def test_train_and_save_lora_file(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    make_dataset(dirs)
    model_with_lora, lora, loss, steps = train(reg, dirs)
    assert isinstance(lora, LoraWeights) and lora.rank == 8 and steps == 16
    assert len(loss["loss"]) == 16 and model_with_lora.loras
    again = train(reg, dirs)[1]
    assert again.digest == lora.digest and all(np.array_equal(lora.tensors[k], again.tensors[k]) for k in lora.keys)
    assert train(reg, dirs, seed=1)[1].digest != lora.digest
    res = call(reg, "SaveLoRANode", dirs, lora=lora, prefix="loras/ComfyUI_trained_lora", steps=steps)
    assert res.outputs == () and res.ui is None
    path = dirs.output / "loras" / "ComfyUI_trained_lora_16_steps_00001_.safetensors"
    assert path.is_file() and not list((dirs.output / "loras").glob(".*"))
    tensors = load_file(str(path))
    ups = [k for k in tensors if k.endswith(".lora_up.weight")]
    assert len(ups) >= 4 and all(k.startswith("diffusion_model.") for k in tensors)
    for up in ups:
        module = up[: -len(".lora_up.weight")]
        down, alpha = tensors[module + ".lora_down.weight"], tensors[module + ".alpha"]
        assert tensors[up].shape[1] == 8 and down.shape[0] == 8 and alpha.shape == ()
        assert tensors[up].dtype == np.float16  # bf16 requested: stored as float16
    assert all(np.isfinite(t.astype(np.float32)).all() for t in tensors.values())
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    assert meta["rank"] == "8" and meta["steps"] == "16" and meta["algorithm"] == "LoRA"
    # The file is a LoRA of the worker now, listed for LoraLoader.
    assert "ComfyUI_trained_lora_16_steps_00001_.safetensors" in modelfiles.listed(dirs, "loras")
    # Continuing from it counts its steps (parsed from the name, as ComfyUI does).
    steps2 = train(reg, dirs, existing_lora="ComfyUI_trained_lora_16_steps_00001_.safetensors", steps=4)[3]
    assert steps2 == 20


@pytest.mark.parametrize(("algorithm", "suffixes"), [
    ("LoHa", {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"}),
    ("LoKr", {"lokr_w1", "lokr_w2_a", "lokr_w2_b", "alpha"}),
    ("OFT", {"oft_blocks", "alpha"}),
])
def test_other_algorithms_fp32(reg: NodeRegistry, dirs: WorkerDirs, algorithm: str, suffixes: set[str]) -> None:
    make_dataset(dirs)
    lora = train(reg, dirs, algorithm=algorithm, lora_dtype="fp32", rank=4)[1]
    assert {k.rsplit(".", 1)[-1] if not k.endswith(".weight") else "" for k in lora.keys} <= suffixes
    assert all(t.dtype == np.float32 and np.isfinite(t).all() for t in lora.tensors.values())
    call(reg, "SaveLoRANode", dirs, lora=lora, prefix="loras/x")
    assert (dirs.output / "loras" / "x_00001_.safetensors").is_file()


def test_train_lora_checks_caption_count(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    make_dataset(dirs)
    with pytest.raises(ValueError, match=r"Number of positive conditions \(2\) does not match number of images \(3\)"):
        train(reg, dirs, positive=[Cond("a"), Cond("b")])


# -- latency --------------------------------------------------------------------------------------------


def test_gpu_latency_of_model_nodes(reg: NodeRegistry) -> None:
    gpu = parse_latency("gpu")
    ckpt, ks, train_cls = reg.get("CheckpointLoaderSimple"), reg.get("KSampler"), reg.get("TrainLoraNode")
    assert ckpt is not None and ks is not None and train_cls is not None
    assert gpu.plan(ckpt, {"ckpt_name": SDXL}, 5).seconds >= 5.0
    assert gpu.plan(ckpt, {"ckpt_name": SDXL}, 5).seconds < 0.01
    lat = {"samples": np.zeros((1, 4, 128, 128), np.float32)}
    sdxl = gpu.plan(ks, {"steps": 20, "model": Model(SDXL, "sdxl"), "latent_image": lat}, 5)
    flux = gpu.plan(ks, {"steps": 20, "model": Model(FLUX, "flux"), "latent_image": lat}, 5)
    assert sdxl.steps == 20 and sdxl.seconds == pytest.approx(20 * 0.15) and flux.seconds == pytest.approx(20 * 0.4)
    assert gpu.plan(train_cls, {"steps": 10}, 3) == type(sdxl)(10 * GPU_STEP_SECONDS["TrainLoraNode"], 0)
