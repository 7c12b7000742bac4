"""LoRA validation on real safetensors files: every layout, every defect, each message naming file and tensor."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from reelforge.lora import LoraInvalid, LoraUnreadable, normalize_family, validate_lora
from reelforge.lora import tensors as tensors_module
from reelforge.lora.layout import analyse, split_key
from reelforge.lora.tensors import count_non_finite
from reelforge.preview.nodes.training import make_lora

RNG = np.random.default_rng(7)


def _w(*shape: int, dtype: type = np.float16) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.01).astype(dtype)


def _pair(module: str, out_f: int, in_f: int, rank: int, *, dtype: type = np.float16) -> dict[str, np.ndarray]:
    return {
        f"{module}.lora_down.weight": _w(rank, in_f, dtype=dtype),
        f"{module}.lora_up.weight": _w(out_f, rank, dtype=dtype),
        f"{module}.alpha": np.array(float(rank), dtype=dtype),
    }


def _peft(module: str, out_f: int, in_f: int, rank: int) -> dict[str, np.ndarray]:
    return {f"{module}.lora_A.weight": _w(rank, in_f), f"{module}.lora_B.weight": _w(out_f, rank)}


def kohya_sdxl(rank: int = 8) -> dict[str, np.ndarray]:
    return {
        **_pair("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 64, 2048, rank),
        **_pair("lora_unet_output_blocks_2_1_transformer_blocks_1_attn1_to_q", 64, 64, rank),
        **_pair("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 32, 32, rank),
        **_pair("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 32, 32, rank),
    }


def kohya_flux(rank: int = 8) -> dict[str, np.ndarray]:
    return {
        **_pair("lora_unet_double_blocks_0_img_attn_qkv", 96, 32, rank),
        **_pair("lora_unet_double_blocks_0_txt_attn_proj", 32, 32, rank),
        **_pair("lora_unet_single_blocks_3_linear2", 32, 64, rank),
    }


def kohya_sd15(rank: int = 4) -> dict[str, np.ndarray]:
    return {
        **_pair("lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k", 32, 768, rank),
        **_pair("lora_te_text_model_encoder_layers_0_mlp_fc1", 32, 32, rank),
    }


def diffusers_flux(rank: int = 16) -> dict[str, np.ndarray]:
    return {
        **_peft("transformer.single_transformer_blocks.0.attn.to_k", 48, 48, rank),
        **_peft("transformer.transformer_blocks.0.attn.to_q", 48, 48, rank),
    }


def diffusers_sdxl(rank: int = 4) -> dict[str, np.ndarray]:
    return {
        **_peft("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", 64, 2048, rank),
        **_peft("unet.up_blocks.0.attentions.1.transformer_blocks.3.attn1.to_v", 64, 64, rank),
        **_peft("text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj", 32, 32, rank),
    }


def write(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


def write_raw(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> Path:
    """A safetensors file by the format's letter (8-byte length, JSON header, data): any dtype, bfloat16 too."""
    header: dict[str, object] = {}
    data = b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def bf16_bytes(values: np.ndarray) -> bytes:
    """float32 -> bfloat16 by truncation (the upper 16 bits), little-endian."""
    return (np.asarray(values, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()


def bf16_lora(path: Path, *, poison: dict[str, tuple[int, int]] | None = None) -> Path:
    """A kohya SDXL LoRA stored in bfloat16; ``poison``: tensor -> (flat index, raw bf16 bits) to plant."""
    tensors: dict[str, tuple[str, list[int], bytes]] = {}
    for name, array in kohya_sdxl().items():
        raw = bytearray(bf16_bytes(array.astype(np.float32)))
        if poison and name in poison:
            index, bits = poison[name]
            raw[2 * index : 2 * index + 2] = struct.pack("<H", bits)
        tensors[name] = ("BF16", list(array.shape), bytes(raw))
    return write_raw(path, tensors)


def invalid(path: Path, **kwargs: object) -> LoraInvalid:
    with pytest.raises(LoraInvalid) as caught:
        validate_lora(path, **kwargs)  # type: ignore[arg-type]
    return caught.value


# -- valid files of every layout ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "layout", "family", "rank"),
    [
        (kohya_sdxl, "kohya", "sdxl", 8),
        (kohya_flux, "kohya", "flux", 8),
        (kohya_sd15, "kohya", "sd15", 4),
        (diffusers_flux, "diffusers", "flux", 16),
        (diffusers_sdxl, "diffusers", "sdxl", 4),
    ],
)
def test_valid_files_report_layout_family_and_rank(
    tmp_path: Path, build: object, layout: str, family: str, rank: int
) -> None:
    tensors = build()  # type: ignore[operator]
    path = write(tmp_path / "ok.safetensors", tensors, {"ss_network_dim": str(rank)})
    report = validate_lora(path, expected_rank=rank, family=family)
    assert (report.layout, report.family, report.family_source, report.rank) == (layout, family, "keys", rank)
    assert report.ok and report.problems == []
    assert report.tensors == len(tensors)
    assert report.dtypes == {"F16": len(tensors)}
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.size == path.stat().st_size
    assert report.metadata == {"ss_network_dim": str(rank)}
    assert report.algorithms == ["LoRA"]


def test_kohya_report_details(tmp_path: Path) -> None:
    report = validate_lora(write(tmp_path / "x.safetensors", kohya_sdxl(rank=8)))
    assert report.modules == 4
    assert report.alpha == 8.0
    assert report.ranks == [8]
    assert report.text_encoder is True


@pytest.mark.parametrize(
    ("family", "algorithm"), [(f, a) for f in ("sdxl", "flux", "sd15") for a in ("LoRA", "LoHa", "LoKr", "OFT")]
)
def test_the_preview_trainers_files_validate(tmp_path: Path, family: str, algorithm: str) -> None:
    """The layout reelforge/preview/nodes/training.py writes (ComfyUI's TrainLoraNode + SaveLoRANode)."""
    lora = make_lora(
        digest="ab" * 32,
        family=family,
        algorithm=algorithm,
        rank=8,
        steps=10,
        learning_rate=1e-4,
        lora_dtype="bf16",
        base_model="model.safetensors",
        metadata={"rank": "8"},
    )
    path = write(tmp_path / "ComfyUI_trained_lora_10_steps_00001_.safetensors", dict(lora.tensors), lora.metadata)
    report = validate_lora(path, expected_rank=8, family=family)
    assert report.layout == "comfyui"
    assert report.family == family
    assert report.algorithms == [algorithm]
    assert report.rank == (None if algorithm == "OFT" else 8)  # OFT's block count is no rank
    assert report.alpha == 1.0


def test_bf16_file_without_defects_passes_and_its_alpha_is_read(tmp_path: Path) -> None:
    report = validate_lora(bf16_lora(tmp_path / "bf.safetensors"), expected_rank=8, family="sdxl")
    assert report.dtypes == {"BF16": 12}
    assert report.alpha == 8.0


def test_family_from_metadata_when_the_keys_do_not_say(tmp_path: Path) -> None:
    tensors = _pair("lora_unet_input_blocks_4_1_proj_in", 32, 32, 4)  # UNet, but nothing tells SDXL from SD1
    path = write(tmp_path / "m.safetensors", tensors, {"ss_base_model_version": "sdxl_base_v1-0"})
    report = validate_lora(path, family="sdxl")
    assert (report.family, report.family_source) == ("sdxl", "metadata")
    bare = write(tmp_path / "bare.safetensors", tensors)
    error = invalid(bare, family="sdxl")
    assert error.codes == ["family_unknown"]
    assert validate_lora(bare).family == "unknown"  # no expectation: not a problem


# -- defects ---------------------------------------------------------------------------------------------


def test_bf16_nan_names_file_and_tensor(tmp_path: Path) -> None:
    bad = "lora_unet_output_blocks_2_1_transformer_blocks_1_attn1_to_q.lora_up.weight"
    path = bf16_lora(tmp_path / "nan.safetensors", poison={bad: (5, 0x7FC0)})
    error = invalid(path)
    assert error.codes == ["non_finite"]
    assert error.path == str(path) and error.tensor == bad
    first_line = str(error).splitlines()[0]
    assert str(path) in first_line and bad in first_line
    assert "first at flat index 5: nan" in first_line and "BF16" in first_line
    assert error.report is not None and error.report.dtypes == {"BF16": 12}


def test_bf16_inf_and_negative_inf(tmp_path: Path) -> None:
    down = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"
    up = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"
    path = bf16_lora(tmp_path / "inf.safetensors", poison={down: (0, 0x7F80), up: (3, 0xFF80)})
    error = invalid(path)
    assert error.codes == ["non_finite", "non_finite"]
    assert {p.tensor for p in error.problems} == {down, up}
    assert all(": inf" in p.message for p in error.problems)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nan_in_other_float_dtypes(tmp_path: Path, dtype: type) -> None:
    tensors = kohya_flux()
    name = "lora_unet_single_blocks_3_linear2.lora_down.weight"
    array = tensors[name].astype(dtype)
    array[2, 7] = np.nan
    tensors = {k: v.astype(dtype) for k, v in tensors.items()} | {name: array}
    error = invalid(write(tmp_path / "n.safetensors", tensors), dtypes={"F16", "F32", "F64"})
    assert error.codes == ["non_finite"]
    assert error.tensor == name
    assert f"first at flat index {2 * 64 + 7}: nan" in str(error)


def test_large_tensor_scanned_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tensors_module, "_CHUNK_BYTES", 10)  # not a multiple of 4: reads realign
    tensors = kohya_flux(rank=8)
    name = "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"
    array = tensors[name].astype(np.float32)
    array.flat[700] = np.inf
    array.flat[701] = np.nan
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()} | {name: array}
    error = invalid(write(tmp_path / "c.safetensors", tensors))
    assert error.tensor == name
    assert "2 of 768 values are NaN or inf (first at flat index 700: inf" in str(error)


def test_truncated_file(tmp_path: Path) -> None:
    good = write(tmp_path / "good.safetensors", kohya_sdxl())
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(LoraUnreadable) as caught:
        validate_lora(cut)
    assert caught.value.codes == ["not_safetensors"]
    assert str(caught.value).startswith(f"{cut}: is not a safetensors file: ")
    assert caught.value.report is None and caught.value.tensor is None


def test_json_renamed_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    path.write_text(json.dumps({"lora_unet_x.lora_up.weight": [1, 2, 3]}))
    with pytest.raises(LoraUnreadable) as caught:
        validate_lora(path)
    assert str(path) in str(caught.value) and "not a safetensors file" in str(caught.value)


@pytest.mark.parametrize(
    ("content", "words"), [(None, "no such file"), (b"", "the file is empty"), (b"\x01\x02", "not a safetensors file")]
)
def test_missing_empty_and_tiny_files(tmp_path: Path, content: bytes | None, words: str) -> None:
    path = tmp_path / "f.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LoraUnreadable) as caught:
        validate_lora(path)
    assert str(path) in str(caught.value) and words in str(caught.value)


def test_zero_tensors(tmp_path: Path) -> None:
    error = invalid(write(tmp_path / "empty.safetensors", {}))
    assert error.codes == ["no_tensors"]
    assert str(error) == f"{tmp_path / 'empty.safetensors'}: holds no tensors"


def test_over_max_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "big.safetensors", kohya_sdxl())
    with pytest.raises(LoraUnreadable) as caught:
        validate_lora(path, max_bytes=1000)
    assert caught.value.codes == ["too_large"]
    assert f"{path}: is {path.stat().st_size} bytes, over the limit of 1000 bytes" in str(caught.value)


def test_missing_pair_names_the_orphan(tmp_path: Path) -> None:
    tensors = kohya_sdxl()
    del tensors["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight"]
    error = invalid(write(tmp_path / "p.safetensors", tensors))
    assert error.codes == ["missing_pair"]
    assert error.tensor == "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight"
    assert "has no matching lora_down.weight" in str(error)


def test_missing_peft_pair_and_a_lone_alpha(tmp_path: Path) -> None:
    tensors = diffusers_flux()
    del tensors["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"]
    tensors["transformer.single_transformer_blocks.5.attn.to_v.alpha"] = np.array(4.0, dtype=np.float16)
    error = invalid(write(tmp_path / "p.safetensors", tensors))
    assert error.codes == ["missing_pair"]  # two, collapsed into one line that counts the other
    assert error.tensor == "transformer.single_transformer_blocks.5.attn.to_v.alpha"
    assert "and 1 more modules with a missing part" in str(error)


def test_shapes_that_disagree(tmp_path: Path) -> None:
    tensors = kohya_flux(rank=8)
    tensors["lora_unet_double_blocks_0_txt_attn_proj.lora_up.weight"] = _w(32, 4)
    error = invalid(write(tmp_path / "s.safetensors", tensors))
    assert error.codes == ["shape_mismatch"]
    assert error.tensor == "lora_unet_double_blocks_0_txt_attn_proj.lora_up.weight"
    assert "up has 4 columns, down has rank 8" in str(error)


def test_non_scalar_alpha(tmp_path: Path) -> None:
    tensors = kohya_flux()
    tensors["lora_unet_single_blocks_3_linear2.alpha"] = np.ones(3, dtype=np.float16)
    error = invalid(write(tmp_path / "a.safetensors", tensors))
    assert error.codes == ["bad_alpha"] and error.tensor == "lora_unet_single_blocks_3_linear2.alpha"


def test_wrong_rank(tmp_path: Path) -> None:
    path = write(tmp_path / "r.safetensors", kohya_sdxl(rank=8))
    error = invalid(path, expected_rank=16)
    assert error.codes == ["rank_mismatch"]
    assert error.tensor is not None and error.tensor.endswith(".lora_down.weight")
    assert str(error).startswith(f"{path}: tensor {error.tensor!r}: has rank 8, expected 16 (3 more modules")


def test_mixed_ranks_report_every_rank(tmp_path: Path) -> None:
    tensors = kohya_flux(rank=8) | _pair("lora_unet_double_blocks_1_img_mlp_0", 32, 32, 4)
    report = validate_lora(write(tmp_path / "m.safetensors", tensors))
    assert (report.rank, report.ranks) == (None, [4, 8])
    error = invalid(tmp_path / "m.safetensors", expected_rank=8)
    assert error.tensor == "lora_unet_double_blocks_1_img_mlp_0.lora_down.weight"


@pytest.mark.parametrize("build", [kohya_sdxl, diffusers_sdxl])
def test_sdxl_keys_where_flux_is_expected(tmp_path: Path, build: object) -> None:
    path = write(tmp_path / "sdxl.safetensors", build())  # type: ignore[operator]
    error = invalid(path, family="flux")
    assert error.codes == ["family_mismatch"]
    assert error.tensor is not None
    assert str(error) == f"{path}: tensor {error.tensor!r}: expected a flux LoRA, but its keys are sdxl's"


def test_flux_keys_where_sdxl_is_expected(tmp_path: Path) -> None:
    error = invalid(write(tmp_path / "f.safetensors", kohya_flux()), family="SDXL")
    assert error.codes == ["family_mismatch"]
    assert error.tensor is not None and "double_blocks" in error.tensor


def test_flux_and_unet_keys_in_one_file(tmp_path: Path) -> None:
    error = invalid(write(tmp_path / "x.safetensors", kohya_flux() | kohya_sdxl()), family="flux")
    assert error.codes == ["mixed_family"]


def test_unexpected_dtype(tmp_path: Path) -> None:
    tensors = kohya_flux()
    tensors["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"] = _w(96, 8, dtype=np.float64)
    tensors["lora_unet_single_blocks_3_linear2.alpha"] = np.array(8, dtype=np.int32)
    error = invalid(write(tmp_path / "d.safetensors", tensors))
    assert error.codes == ["dtype"]
    assert error.tensor == "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"
    assert "has dtype F64, expected one of BF16, F16, F32 (1 more tensors of other dtypes)" in str(error)


def test_unknown_layout(tmp_path: Path) -> None:
    path = write(tmp_path / "model.safetensors", {"model.layers.0.weight": _w(4, 4), "model.norm.weight": _w(4)})
    error = invalid(path)
    assert error.codes == ["unknown_layout"]
    assert error.tensor == "model.layers.0.weight"


def test_stray_key_and_mixed_layouts(tmp_path: Path) -> None:
    stray = invalid(write(tmp_path / "s.safetensors", kohya_flux() | {"something_else": _w(2)}))
    assert stray.codes == ["unknown_key"] and stray.tensor == "something_else"
    mixed = invalid(write(tmp_path / "m.safetensors", kohya_flux() | diffusers_flux(rank=8)))
    assert mixed.codes == ["mixed_layout"]
    assert "diffusers (e.g." in str(mixed) and "kohya (e.g." in str(mixed)


def test_every_problem_is_collected_and_raised_once(tmp_path: Path) -> None:
    tensors = kohya_sdxl(rank=8)
    tensors["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight"][0, 0] = np.nan
    path = write(tmp_path / "many.safetensors", tensors)
    error = invalid(path, expected_rank=4, family="flux")
    assert error.codes == ["rank_mismatch", "family_mismatch", "non_finite"]
    lines = str(error).splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{path}: tensor '") for line in lines)
    assert error.report is not None and len(error.report.problems) == 3


def test_errors_pickle(tmp_path: Path) -> None:
    tensors = kohya_flux()
    del tensors["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"]
    error = invalid(write(tmp_path / "p.safetensors", tensors))
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is LoraInvalid
    assert (str(again), again.path, again.tensor, again.codes) == (str(error), error.path, error.tensor, error.codes)


def test_unknown_expected_family_is_a_caller_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown base model family 'pony'"):
        validate_lora(write(tmp_path / "x.safetensors", kohya_flux()), family="pony")
    assert normalize_family("SD1.5") == "sd15" and normalize_family("Flux") == "flux"


# -- pure parts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "raw", "expected"),
    [
        ("F16", struct.pack("<4H", 0x3C00, 0x7C00, 0x7E00, 0xFC00), (3, 1, False)),
        ("BF16", struct.pack("<3H", 0x3F80, 0x7FC1, 0x7F80), (2, 1, True)),
        ("F32", struct.pack("<2f", 1.0, float("inf")), (1, 1, False)),
        ("F64", struct.pack("<2d", float("nan"), 0.5), (1, 0, True)),
        ("F8_E5M2", bytes([0x3C, 0x7C, 0x7D]), (2, 1, False)),
        ("F8_E4M3", bytes([0x7E, 0x7F, 0xFF]), (2, 1, True)),
        ("F16", struct.pack("<2H", 0x7BFF, 0x0001), (0, -1, False)),  # largest finite and a subnormal
    ],
)
def test_non_finite_bits(dtype: str, raw: bytes, expected: tuple[int, int, bool]) -> None:
    assert count_non_finite(raw, dtype) == expected


def test_split_key() -> None:
    assert split_key("lora_unet_a.lora_up.weight") == ("lora_unet_a", "lora_up.weight")
    assert split_key("unet.a.to_q.lora.down.weight") == ("unet.a.to_q", "lora.down.weight")
    assert split_key("x.lora_A.weight") == ("x", "lora_A.weight")
    assert split_key("x.weight") is None


def test_analyse_without_files() -> None:
    analysis = analyse(
        {
            "diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight": ("BF16", (9216, 4)),
            "diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight": ("BF16", (4, 3072)),
        }
    )
    assert (analysis.layout, analysis.family, analysis.ranks, analysis.problems) == ("comfyui", "flux", [4], [])


def test_torch_cross_check_when_installed(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    report = validate_lora(bf16_lora(tmp_path / "ok.safetensors"))
    assert report.cross_check == f"torch {torch.__version__}"
    bad = "lora_unet_output_blocks_2_1_transformer_blocks_1_attn1_to_q.lora_up.weight"
    error = invalid(bf16_lora(tmp_path / "nan.safetensors", poison={bad: (1, 0xFFC0)}), cross_check=True)
    assert error.codes == ["non_finite"]  # torch agrees: no cross_check problem
