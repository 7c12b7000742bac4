"""Placeholder images for image latents: a pattern derived from the recipe, with the prompt written on it.

``render_image(recipe, batch_index)`` is a pure function of what the graph meant: prompt, negative prompt,
seed (plus batch index), size, model and its LoRAs/patches, sampler settings, denoise, start image and
control image. The background is a smooth pattern whose colours and shapes come from a hash of all of that;
the prompt is drawn legibly on a translucent panel (wrapped to the width) with a footer naming seed, model
and LoRAs, so a person can tell which prompt made which image. img2img (``denoise < 1``) blends the start
image with the pattern; a control (pose) image is overlaid faintly.

The subject (docs/identity.md): every picture shows a "portrait card" in a centred square of half the shorter
side (``card_box``), drawn in front of the caption so that no prompt length hides it. Who is on it:

* with LoRAs on the model, each LoRA's ``Identity`` weighted by its strength (0..1; strengths adding up to
  more than 1 share the card; negative strengths draw nothing), the rest the picture's own subject;
* without, the picture's own subject: a face generated from prompt, seed, batch index and model, so, as on a
  real model, text alone gives a new person for every seed;
* image-to-image keeps the start image's card with weight ``min(1, 2 * (1 - denoise))`` (0.9 at the variation
  templates' 0.55), as a low denoise keeps a face.

A learned identity (``Identity.card``) is drawn by enlarging its 32x32 pixels; a generated one is a face whose
backdrop, outfit, skin, hair, eyes and mouth (colours, sizes, places) come from a hash of its key.
``learn_identity`` is the trainer's half: the mean card of a set of training images.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reelforge.preview.values import CARD_CELLS, Identity, Model, Recipe

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _array_digest(array: np.ndarray | None) -> str:
    if array is None:
        return ""
    a = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def _model_key(model: Model | None) -> Any:
    if model is None:
        return None
    key = [model.name, model.family, [list(x) for x in model.loras], repr(model.patches), repr(model.ipadapter)]
    if model.identities:  # only then, so pictures without LoRAs keep the patterns they always had
        key.append([[identity.key, strength] for identity, strength in model.identities])
    return key


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def recipe_digest(recipe: Recipe, batch_index: int = 0) -> bytes:
    """sha256 over everything that makes the picture (simple ``extras`` values included)."""
    key = {
        "prompt": recipe.prompt,
        "negative": recipe.negative,
        "seed": recipe.seed,
        "batch": batch_index,
        "size": [recipe.width, recipe.height],
        "steps": recipe.steps,
        "denoise": round(float(recipe.denoise), 6),
        "model": _model_key(recipe.model),
        "start": _array_digest(start_image(recipe, batch_index)) if recipe.denoise < 1.0 else "",
        "control": [list(c) for c in recipe.control],
        "control_image": _array_digest(recipe.extras.get("control_image")),
        "extras": sorted((str(k), v) for k, v in recipe.extras.items() if _plain(v)),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=repr).encode()).digest()


def start_image(recipe: Recipe, batch_index: int = 0) -> np.ndarray | None:
    """The start image of batch item ``batch_index`` (VAEEncode keeps the batch in ``start_images``)."""
    images = recipe.extras.get("start_images")
    if isinstance(images, np.ndarray) and images.ndim == 4 and 0 <= batch_index < images.shape[0]:
        item: np.ndarray = images[batch_index]
        return item
    return recipe.start_image


def _colour(digest: bytes, offset: int) -> np.ndarray:
    """A saturated mid-bright colour from three digest bytes."""
    hue = digest[offset] / 255.0
    sat = 0.45 + 0.4 * digest[offset + 1] / 255.0
    val = 0.45 + 0.4 * digest[offset + 2] / 255.0
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return np.array(rgb, dtype=np.float32)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """[H,W,C] float image to RGB (width, height) with Pillow."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 4:
        a = a[0]
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    pil = Image.fromarray(np.clip(a[..., :3] * 255.0, 0, 255).astype(np.uint8))
    if pil.size != (width, height):
        pil = pil.resize((width, height), Image.Resampling.BILINEAR)
    out: np.ndarray = np.asarray(pil, dtype=np.float32) / np.float32(255.0)
    return out


START_KEEP_POWER = 2.5  # the start image kept outside the card: (1 - denoise) ** this (0.14 at 0.55, 0.57 at 0.2)
LAYOUT_ORDER = 7  # the new light's cosines go up to this many half-periods across the picture (pHash reads 0..7)
LAYOUT_GAIN = 1.6  # its brightness swing: the lit picture is the pattern x (1 + LAYOUT_GAIN x field), field std 1
LAYOUT_FALLOFF = 0.1  # the amplitude of order (kx, ky) is divided by 1 + this x (kx + ky)


def start_keep(denoise: float) -> float:
    """How much of the start image image-to-image keeps outside the card: all at 0, none at 1, monotone."""
    return float((1.0 - float(np.clip(denoise, 0.0, 1.0))) ** START_KEEP_POWER)


def layout_field(recipe: Recipe, batch_index: int, width: int, height: int) -> np.ndarray:
    """The large-scale light of an image-to-image picture: [H,W] float32, mean 0, std 1, from prompt and seed.

    A sum of 2-D cosines up to LAYOUT_ORDER half-periods across the picture, each amplitude from a hash of
    prompt, seed and batch item (not of the denoise, so a lower denoise shows the same light, weaker): where a
    new pose, framing and light move a photo's large bright and dark areas, this moves the placeholder's, so
    the perceptual hashes of two variations of one base are as far apart as two photos' (docs/preview-worker.md).
    """
    key = json.dumps(["layout", recipe.prompt, recipe.seed, batch_index], ensure_ascii=False).encode()
    n = (LAYOUT_ORDER + 1) ** 2
    stream = b"".join(hashlib.sha256(key + bytes([i])).digest() for i in range((2 * n + 31) // 32))
    values = np.frombuffer(stream[: 2 * n], dtype=">u2").astype(np.float64) / 65535.0
    amplitude = (values.reshape(LAYOUT_ORDER + 1, LAYOUT_ORDER + 1) * 2.0 - 1.0)
    k = np.arange(LAYOUT_ORDER + 1, dtype=np.float64)
    amplitude /= 1.0 + LAYOUT_FALLOFF * (k[:, None] + k[None, :])  # the largest areas weigh most, as in a photo
    amplitude[0, 0] = 0.0
    y = (np.arange(height, dtype=np.float64) + 0.5) / height
    x = (np.arange(width, dtype=np.float64) + 0.5) / width
    rows, cols = np.cos(np.pi * k[:, None] * y[None, :]), np.cos(np.pi * k[:, None] * x[None, :])
    field = rows.T @ amplitude @ cols  # [H, W]
    field -= field.mean()
    field /= max(1e-9, float(field.std()))
    out: np.ndarray = field.astype(np.float32)
    return out


def background(recipe: Recipe, batch_index: int = 0) -> np.ndarray:
    """The picture without the writing: hashed pattern, start-image blend, control overlay. [H,W,3]."""
    width, height = max(1, recipe.width or 512), max(1, recipe.height or 512)
    first = recipe_digest(recipe, batch_index)
    digest = first + hashlib.sha256(first).digest()  # 64 bytes of choices
    y = (np.arange(height, dtype=np.float32) / max(1, height - 1))[:, None]
    x = (np.arange(width, dtype=np.float32) / max(1, width - 1))[None, :]
    angle = digest[9] / 255.0 * 2 * np.pi
    ramp = np.clip(0.5 + (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle), 0.0, 1.0)
    # A dark end and a light end: the ramp's direction (from the hash) is the picture's coarse layout, so two
    # prompts' pictures differ in their perceptual hashes as two photos do, not only in hue.
    c0, c1 = _colour(digest, 0) * np.float32(0.45), np.float32(0.45) + _colour(digest, 3) * np.float32(0.55)
    image = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]
    # Waves: frequency, direction and phase from the hash.
    freq = 2.0 + digest[10] % 9
    wave_angle = digest[11] / 255.0 * np.pi
    phase = digest[12] / 255.0 * 2 * np.pi
    wave = np.sin(2 * np.pi * freq * (x * np.cos(wave_angle) + y * np.sin(wave_angle)) + phase)
    image = image * (0.85 + 0.15 * wave[..., None])
    # A few soft blobs.
    aspect = width / height
    for i in range(3 + digest[13] % 3):
        b = 14 + 4 * i
        cx, cy = digest[b] / 255.0, digest[b + 1] / 255.0
        radius = 0.08 + 0.25 * digest[b + 2] / 255.0
        blob = np.exp(-(((x - cx) * aspect) ** 2 + (y - cy) ** 2) / (2 * radius**2))[..., None]
        image = image * (1 - 0.6 * blob) + _colour(digest, b + 3) * (0.6 * blob)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    start_pixels = start_image(recipe, batch_index)
    start: np.ndarray | None = None
    if start_pixels is not None and recipe.denoise < 1.0:
        start = _resize(start_pixels, width, height)
        # Around the subject a new prompt (pose, outfit, light, place) repaints the picture under a new light
        # (layout_field): the start image shows through with start_keep(denoise), so variations of one base
        # differ as much as a diffusion model's do (their pHashes are no near-duplicates) while the card keeps
        # the face, and a low denoise stays close to the start image.
        light = np.float32(1.0) + np.float32(LAYOUT_GAIN) * layout_field(recipe, batch_index, width, height)
        lit = np.clip(image * light[..., None], 0.0, 1.0)
        keep = np.float32(start_keep(recipe.denoise))
        image = start * keep + lit * (np.float32(1.0) - keep)
    x0, y0, x1, y1 = card_box(width, height)
    image[y0:y1, x0:x1] = subject_card(recipe, batch_index, x1 - x0, start[y0:y1, x0:x1] if start is not None else None)
    control_image = recipe.extras.get("control_image")
    if control_image is not None:
        strength = max((s for _, s in recipe.control), default=1.0)
        alpha = np.float32(0.35 * min(1.0, max(0.0, float(strength))))
        image = image * (1 - alpha) + _resize(control_image, width, height) * alpha
    out: np.ndarray = np.clip(image, 0.0, 1.0).astype(np.float32)
    return out


@cache
def font(size: int) -> Font:
    """Pillow's bundled font at ``size`` pixels (FreeType); the bitmap default if FreeType is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _text_width(f: Font, text: str) -> float:
    return float(f.getlength(text))


def wrap(text: str, f: Font, width: float) -> list[str]:
    """Greedy word wrap by rendered width; words longer than a line are split."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if _text_width(f, candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while _text_width(f, word) > width and len(word) > 1:
                cut = len(word) - 1
                while cut > 1 and _text_width(f, word[:cut]) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def _short(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    for ext in (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def footer_text(recipe: Recipe, batch_index: int = 0) -> str:
    """``seed 42 · sd_xl_base_1.0 · lora style:0.80 · denoise 0.60``."""
    seed = f"seed {recipe.seed}" + (f"+{batch_index}" if batch_index else "")
    parts = [seed]
    if recipe.model is not None:
        parts.append(_short(recipe.model.name))
        parts.extend(f"lora {_short(n)}:{s:.2f}" for n, s in recipe.model.loras)
    if recipe.steps:
        parts.append(f"{recipe.steps} steps")
    if recipe.denoise < 1.0:
        parts.append(f"denoise {recipe.denoise:.2f}")
    parts.extend(f"control {_short(n)}:{s:.2f}" for n, s in recipe.control)
    return " · ".join(parts)


def _panel(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], pad: int) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle((x0 - pad, y0 - pad, x1 + pad, y1 + pad), fill=(0, 0, 0, 150))


def draw_caption(image: np.ndarray, prompt: str, negative: str, footer: str) -> np.ndarray:
    """Write the prompt (top, wrapped), the negative prompt and the footer (bottom) on an [H,W,3] image."""
    height, width = image.shape[:2]
    base = Image.fromarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    size = int(np.clip(min(width, height) / 16, 8, 72))
    small = int(np.clip(size * 0.55, 7, 40))
    margin = max(2, size // 2)
    main_font, small_font = font(size), font(small)
    line_h, small_h = int(size * 1.2), int(small * 1.25)
    max_lines = max(1, int(height * 0.6 // line_h))
    lines = wrap(prompt, main_font, width - 2 * margin) if prompt.strip() else []
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1] + " …"]
    neg_lines = wrap(f"not: {negative}", small_font, width - 2 * margin)[:2] if negative.strip() else []
    foot_lines = wrap(footer, small_font, width - 2 * margin)[:2] if footer else []
    y = margin
    if lines or neg_lines:
        block_w = max([_text_width(main_font, t) for t in lines] + [_text_width(small_font, t) for t in neg_lines])
        block_h = len(lines) * line_h + len(neg_lines) * small_h
        _panel(draw, (margin, y, margin + block_w, y + block_h), max(1, margin // 2))
        for text in lines:
            draw.text((margin, y), text, font=main_font, fill=(255, 255, 255, 255))
            y += line_h
        for text in neg_lines:
            draw.text((margin, y), text, font=small_font, fill=(255, 190, 190, 255))
            y += small_h
    if foot_lines:
        fy = height - margin - len(foot_lines) * small_h
        block_w = max(_text_width(small_font, t) for t in foot_lines)
        _panel(draw, (margin, fy, margin + block_w, fy + len(foot_lines) * small_h), max(1, margin // 2))
        for text in foot_lines:
            draw.text((margin, fy), text, font=small_font, fill=(230, 230, 230, 255))
            fy += small_h
    composed = Image.alpha_composite(base, overlay).convert("RGB")
    out: np.ndarray = np.asarray(composed, dtype=np.float32) / np.float32(255.0)
    return out


def render_image(recipe: Recipe, batch_index: int = 0) -> np.ndarray:
    """The placeholder picture of an image recipe: [H,W,3] float32 in 0..1, deterministic in the recipe."""
    picture = background(recipe, batch_index)
    out = draw_caption(picture, recipe.prompt, recipe.negative, footer_text(recipe, batch_index))
    x0, y0, x1, y1 = card_box(picture.shape[1], picture.shape[0])
    out[y0:y1, x0:x1] = picture[y0:y1, x0:x1]  # the subject stands in front of the caption
    return out


# -- the subject's card (identity) ------------------------------------------------------------------------

CARD_FRACTION = 0.5  # side of the centred card, as a fraction of the shorter image side


def card_box(width: int, height: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the centred square card in a ``width`` x ``height`` picture."""
    side = max(1, round(CARD_FRACTION * min(width, height)))
    x0, y0 = (width - side) // 2, (height - side) // 2
    return x0, y0, x0 + side, y0 + side


def own_identity(recipe: Recipe, batch_index: int = 0) -> Identity:
    """The subject a picture shows without LoRAs: new for every prompt, seed, batch item and model."""
    model = recipe.model.name if recipe.model is not None else ""
    key = json.dumps(["subject", recipe.prompt, recipe.seed, batch_index, model], ensure_ascii=False)
    return Identity(key=hashlib.sha256(key.encode()).hexdigest())


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (round(rgb[0] * 255), round(rgb[1] * 255), round(rgb[2] * 255))


def face_card(key: str, side: int) -> np.ndarray:
    """A generated face for ``key``: [side, side, 3] float32; every feature (colour, size, place) from its hash."""
    d = hashlib.sha256(b"face:" + key.encode()).digest() + hashlib.sha256(b"face2:" + key.encode()).digest()

    def u(i: int, lo: float = 0.0, hi: float = 1.0) -> float:  # byte i as a number in lo..hi
        return lo + (hi - lo) * d[i] / 255.0

    scale = 4  # drawn 4x larger and reduced: smooth edges at any size
    n = max(4, side) * scale
    img = Image.new("RGB", (n, n), _hsv(u(0), u(1, 0.35, 0.8), u(2, 0.35, 0.85)))  # backdrop
    draw = ImageDraw.Draw(img)

    def box(cx: float, cy: float, rx: float, ry: float) -> tuple[float, float, float, float]:
        return ((cx - rx) * n, (cy - ry) * n, (cx + rx) * n, (cy + ry) * n)

    # Outfit (shoulders), its hue away from the backdrop's so the two never blend into one colour.
    outfit = _hsv((u(0) + u(3, 0.25, 0.75)) % 1.0, u(4, 0.4, 0.9), u(5, 0.25, 0.85))
    draw.ellipse(box(0.5, 1.02, u(6, 0.36, 0.48), u(7, 0.22, 0.32)), fill=outfit)
    skin = _hsv(u(8, 0.02, 0.11), u(9, 0.2, 0.65), u(10, 0.35, 0.95))
    hair = _hsv(u(11), u(12, 0.1, 0.9), u(13, 0.1, 0.75))
    fx, fy = 0.5, u(14, 0.42, 0.5)
    rx, ry = u(15, 0.17, 0.24), u(16, 0.22, 0.28)
    draw.rectangle(box(fx, fy + ry * 0.95, rx * 0.38, ry * 0.35), fill=skin)  # neck
    length = u(17)  # hair: short cap .. long sides
    if length > 0.35:
        draw.rectangle(box(fx, fy + ry * length * 0.6, rx * 1.18, ry * (0.35 + length * 0.75)), fill=hair)
    draw.ellipse(box(fx, fy - ry * 0.12, rx * 1.14, ry * 1.05), fill=hair)
    draw.ellipse(box(fx, fy + ry * 0.08, rx, ry * 0.92), fill=skin)  # face
    fringe = u(18, 0.15, 0.55)
    draw.chord(box(fx, fy - ry * 0.25, rx * 1.02, ry * 0.75), 180, 360, fill=hair)
    draw.rectangle(box(fx, fy - ry * 0.62, rx * 0.95, ry * fringe * 0.3), fill=hair)
    eye_y, eye_dx, eye_r = fy + u(19, -0.02, 0.06), rx * u(20, 0.34, 0.5), rx * u(21, 0.11, 0.18)
    iris = _hsv(u(22), u(23, 0.4, 0.9), u(24, 0.2, 0.7))
    white = (216, 216, 216)  # below 0.9 so no pixel reads as caption text
    for sx in (-1, 1):
        draw.ellipse(box(fx + sx * eye_dx, eye_y, eye_r, eye_r * 0.7), fill=white)
        draw.ellipse(box(fx + sx * eye_dx, eye_y, eye_r * 0.55, eye_r * 0.55), fill=iris)
    mouth = _hsv(u(25, 0.93, 1.0) % 1.0, u(26, 0.35, 0.8), u(27, 0.35, 0.8))
    mw, my = rx * u(28, 0.3, 0.6), fy + ry * u(29, 0.45, 0.6)
    draw.chord(box(fx, my - ry * 0.1, mw, ry * u(30, 0.1, 0.22)), 0, 180, fill=mouth)
    reduced = img.resize((side, side), Image.Resampling.BOX)
    out: np.ndarray = np.asarray(reduced, dtype=np.float32) / np.float32(255.0)
    return out


def identity_card(identity: Identity, side: int) -> np.ndarray:
    """What ``identity`` looks like on a card of ``side`` pixels: its learned card enlarged, or its face."""
    learned = identity.card_array()
    if learned is None:
        return face_card(identity.key, side)
    return _resize(learned, side, side)


def subject_card(recipe: Recipe, batch_index: int, side: int, start: np.ndarray | None) -> np.ndarray:
    """The card of a picture: LoRA identities by strength over its own subject, then the start image's card."""
    weighted = [(i, float(min(1.0, s))) for i, s in (recipe.model.identities if recipe.model else ()) if s > 0]
    total = sum(s for _, s in weighted)
    if total > 1.0:  # several LoRAs at full strength share the card
        weighted = [(i, s / total) for i, s in weighted]
        total = 1.0
    card = np.zeros((side, side, 3), np.float32)
    if total < 1.0:
        card += np.float32(1.0 - total) * face_card(own_identity(recipe, batch_index).key, side)
    for identity, strength in weighted:
        card += np.float32(strength) * identity_card(identity, side)
    if start is not None:
        keep = np.float32(min(1.0, 2.0 * (1.0 - float(np.clip(recipe.denoise, 0.0, 1.0)))))
        card = keep * start + (np.float32(1.0) - keep) * card
    out: np.ndarray = np.clip(card, 0.0, 1.0).astype(np.float32)
    return out


def read_card(image: np.ndarray) -> np.ndarray:
    """The card region of an [H,W,3] picture reduced to [CARD_CELLS, CARD_CELLS, 3] float32."""
    a = np.asarray(image, dtype=np.float32)
    x0, y0, x1, y1 = card_box(a.shape[1], a.shape[0])
    return _resize(a[y0:y1, x0:x1], CARD_CELLS, CARD_CELLS)


def learn_identity(images: np.ndarray) -> Identity:
    """The likeness a LoRA trained on ``images`` ([B,H,W,3] in 0..1) carries: the mean of their cards."""
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[0] == 0:
        raise ValueError(f"learn_identity expects [B,H,W,3] images, got shape {batch.shape}")
    return Identity.learned(np.mean([read_card(image) for image in batch], axis=0))
