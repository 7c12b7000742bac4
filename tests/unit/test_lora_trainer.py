"""ExternalTrainer with a stand-in trainer (a Python script written here) and the pure config builders."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from reelforge.liveness import pid_alive
from reelforge.lora import (
    ExternalTrainer,
    LoraDatasetError,
    TrainerCancelled,
    TrainerFailed,
    TrainerNoOutput,
    TrainerTimeout,
    TrainingConfig,
    TrainJob,
    TrainProgress,
    ai_toolkit_config,
    kohya_config,
    toml_dumps,
    validate_lora,
)
from reelforge.lora.trainconfig import expand_command, parse_progress, progress_patterns

# A stand-in for ai-toolkit's run.py and sd-scripts' *_train_network.py: reads the generated config the way they
# do, prints progress the way they do (tqdm bars redrawn with \r), writes a real LoRA of the configured rank.
STAND_IN = r"""
import json, os, subprocess, sys, time, tomllib
import numpy as np
import yaml
from safetensors.numpy import save_file

fmt, config_path = sys.argv[1], sys.argv[2]
mode = os.environ.get("STAND_IN_MODE", "ok")
if fmt == "ai-toolkit":
    with open(config_path) as f:
        job = yaml.safe_load(f)
    name = job["config"]["name"]
    process = job["config"]["process"][0]
    rank, steps = process["network"]["linear"], process["train"]["steps"]
    dataset = process["datasets"][0]["folder_path"]
    target = os.path.join(process["training_folder"], name, name + ".safetensors")
    bar = name
else:
    with open(config_path, "rb") as f:
        args = tomllib.load(f)
    with open(args["dataset_config"], "rb") as f:
        dataset = tomllib.load(f)["datasets"][0]["subsets"][0]["image_dir"]
    rank, steps = args["network_dim"], args["max_train_steps"]
    target = os.path.join(args["output_dir"], args["output_name"] + ".safetensors")
    bar = "steps"
images = sorted(p for p in os.listdir(dataset) if p.endswith(".png"))
print(f"loaded {len(images)} images from {dataset}", flush=True)
print(f"config {os.environ['REELFORGE_LORA_CONFIG']}", flush=True)
if mode == "child":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(os.environ["STAND_IN_PID_FILE"], "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
if mode in ("sleep", "child"):
    time.sleep(60)
print("caching latents: 100%|##########| 2/2 [00:00<00:00]", flush=True)
for step in range(1, steps + 1):
    filled = "#" * (10 * step // steps)
    sys.stdout.write(f"\r{bar}: {100 * step // steps:3d}%|{filled:<10}| {step}/{steps} [00:01<00:02, loss=0.1]")
    sys.stdout.flush()
sys.stdout.write("\n")
if mode == "fail":
    print("Traceback (most recent call last):", file=sys.stderr)
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
    sys.exit(3)
if mode == "nofile":
    sys.exit(0)
if mode == "elsewhere":
    target = os.path.join(os.environ["REELFORGE_LORA_OUTPUT"], "custom", "other.safetensors")
os.makedirs(os.path.dirname(target), exist_ok=True)
rng = np.random.default_rng(0)
tensors = {}
for module, out_f, in_f in (("lora_unet_double_blocks_0_img_attn_qkv", 96, 32),
                            ("lora_unet_single_blocks_0_linear2", 32, 64)):
    tensors[module + ".lora_down.weight"] = rng.standard_normal((rank, in_f)).astype(np.float16)
    tensors[module + ".lora_up.weight"] = rng.standard_normal((out_f, rank)).astype(np.float16)
    tensors[module + ".alpha"] = np.array(rank, dtype=np.float16)
save_file(tensors, target, metadata={"ss_network_dim": str(rank)})
print(f"step {steps}/{steps}: saved {target}", flush=True)
"""

CONFIG = TrainingConfig(
    steps=10,
    rank=4,
    learning_rate=1e-4,
    base_model="black-forest-labs/FLUX.1-dev",
    trainer="stand-in",
    trigger_word="m1na",
)


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    script = tmp_path / "stand in trainer.py"  # a space: placeholders are per argument, no shell involved
    script.write_text(STAND_IN)
    return script


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "my data"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i:03d}.png").write_bytes(b"\x89PNG fake")
        (folder / f"{i:03d}.txt").write_text(f"m1na, photo {i}")
    return folder


def trainer(script: Path, fmt: str = "ai-toolkit", **kwargs: object) -> ExternalTrainer:
    command = [sys.executable, str(script), fmt, "{config}"]
    return ExternalTrainer(command, config_format=fmt, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["ai-toolkit", "kohya"])
def test_trains_with_progress_log_and_a_valid_lora(stand_in: Path, dataset: Path, tmp_path: Path, fmt: str) -> None:
    seen: list[TrainProgress] = []
    out = tmp_path / "out"
    path = trainer(stand_in, fmt).train(dataset, CONFIG, out, family="flux", name="mina-v1", on_progress=seen.append)
    expected = out / "mina-v1" / "mina-v1.safetensors" if fmt == "ai-toolkit" else out / "mina-v1.safetensors"
    assert path == expected
    report = validate_lora(path, expected_rank=4, family="flux")
    assert report.layout == "kohya"
    assert [(p.step, p.total) for p in seen] == [(s, 10) for s in range(1, 11)]  # bar redraws, no duplicates
    assert seen[-1].fraction == 1.0
    log = (out / "mina-v1.log").read_bytes().decode()
    assert log.startswith("$ ") and "stand in trainer.py" in log.splitlines()[0]
    assert "loaded 3 images from" in log and "\r" in log  # the raw output, tqdm's carriage returns kept
    config_file = out / ("mina-v1.yaml" if fmt == "ai-toolkit" else "mina-v1.toml")
    assert f"config {config_file}" in log


def test_failure_carries_the_tail_of_the_output(stand_in: Path, dataset: Path, tmp_path: Path) -> None:
    t = trainer(stand_in, env={"STAND_IN_MODE": "fail"})
    with pytest.raises(TrainerFailed) as caught:
        t.train(dataset, CONFIG, tmp_path / "out", family="flux", name="mina")
    error = caught.value
    assert error.returncode == 3
    assert str(error).startswith("trainer exited with status 3; last output:\n")
    assert (
        error.output_tail.splitlines()[-1] == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    assert error.output_tail.count("mina: ") == 1  # the redrawn bar is one line of the tail, not ten
    assert error.log_path == str(tmp_path / "out" / "mina.log") and error.path == str(tmp_path / "out")
    assert error.command[1] == str(stand_in)


def test_timeout_stops_the_whole_process_group(stand_in: Path, dataset: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    t = trainer(
        stand_in, timeout_s=3, kill_grace_s=2, env={"STAND_IN_MODE": "child", "STAND_IN_PID_FILE": str(pid_file)}
    )
    started = time.monotonic()
    with pytest.raises(TrainerTimeout) as caught:
        t.train(dataset, CONFIG, tmp_path / "out", family="flux", name="mina")
    assert time.monotonic() - started < 15
    assert caught.value.timeout_s == 3
    assert "ran past its timeout of 3 s" in str(caught.value) and "loaded 3 images" in caught.value.output_tail
    parent, child = (int(p) for p in pid_file.read_text().split())
    deadline = time.monotonic() + 5
    while (pid_alive(parent) or pid_alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(parent) and not pid_alive(child)


def test_exit_0_without_a_file(stand_in: Path, dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainerNoOutput) as caught:
        trainer(stand_in, env={"STAND_IN_MODE": "nofile"}).train(dataset, CONFIG, tmp_path / "o", family="flux")
    assert caught.value.returncode == 0
    assert "wrote no .safetensors file under" in str(caught.value)


def test_an_old_file_is_not_taken_for_a_new_one(stand_in: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    t = trainer(stand_in, "kohya")
    first = t.train(dataset, CONFIG, out, family="flux", name="lora")
    assert first == out / "lora.safetensors"
    with pytest.raises(TrainerNoOutput):  # the file of the first run is still there, unchanged
        trainer(stand_in, "kohya", env={"STAND_IN_MODE": "nofile"}).train(dataset, CONFIG, out, family="flux")


def test_a_file_under_another_name_is_found(stand_in: Path, dataset: Path, tmp_path: Path) -> None:
    path = trainer(stand_in, env={"STAND_IN_MODE": "elsewhere"}).train(dataset, CONFIG, tmp_path / "o", family="flux")
    assert path == tmp_path / "o" / "custom" / "other.safetensors"


def test_cancel(stand_in: Path, dataset: Path, tmp_path: Path) -> None:
    cancel = threading.Event()

    def progress(p: TrainProgress) -> None:
        if p.step >= 3:
            cancel.set()

    with pytest.raises(TrainerCancelled):
        trainer(stand_in).train(dataset, CONFIG, tmp_path / "o", family="flux", on_progress=progress, cancel=cancel)


def test_killed_by_a_signal(dataset: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import os, signal; print('loading'); os.kill(os.getpid(), signal.SIGKILL)"]
    with pytest.raises(TrainerFailed) as caught:
        ExternalTrainer(command).train(dataset, CONFIG, tmp_path / "o", family="flux")
    assert caught.value.returncode == -9
    assert str(caught.value) == "trainer was killed by SIGKILL; last output:\nloading"


def test_a_command_that_cannot_start(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainerFailed, match="'/no/such/trainer' could not be started") as caught:
        ExternalTrainer("/no/such/trainer {config}").train(dataset, CONFIG, tmp_path / "o", family="flux")
    assert caught.value.returncode is None


def test_dataset_problems_before_anything_runs(tmp_path: Path) -> None:
    t = ExternalTrainer("/no/such/trainer")
    folder = tmp_path / "set"
    folder.mkdir()
    with pytest.raises(LoraDatasetError, match="holds no images"):
        t.train(folder, CONFIG, tmp_path / "o", family="flux")
    (folder / "a.png").write_bytes(b"x")
    (folder / "b.jpg").write_bytes(b"x")
    (folder / "b.txt").write_text("caption")
    with pytest.raises(LoraDatasetError) as caught:
        t.train(folder, CONFIG, tmp_path / "o", family="flux")
    assert str(caught.value) == f"{folder}: images without a .txt caption: a.png"
    assert caught.value.path == str(folder)
    with pytest.raises(LoraDatasetError, match="is not a folder"):
        t.train(tmp_path / "missing", CONFIG, tmp_path / "o", family="flux")
    assert not (tmp_path / "o").exists()


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="empty"):
        ExternalTrainer("   ")
    with pytest.raises(ValueError, match="two groups"):
        ExternalTrainer("x", progress_pattern=r"(\d+)")
    with pytest.raises(ValueError, match="positive"):
        ExternalTrainer("x", timeout_s=0)


# -- pure builders -------------------------------------------------------------------------------------------


def job(tmp_path: Path, family: str = "flux") -> TrainJob:
    return TrainJob(name="mina-v1", dataset=tmp_path / "data", output=tmp_path / "out", config=CONFIG, family=family)  # type: ignore[arg-type]


def test_ai_toolkit_config(tmp_path: Path) -> None:
    doc = ai_toolkit_config(job(tmp_path))
    process = doc["config"]["process"][0]
    assert doc["job"] == "extension" and doc["config"]["name"] == "mina-v1"
    assert process["network"] == {"type": "lora", "linear": 4, "linear_alpha": 4}
    assert process["datasets"][0]["folder_path"] == str(tmp_path / "data")
    assert process["datasets"][0]["caption_ext"] == "txt" and process["datasets"][0]["resolution"] == [1024]
    assert process["train"]["steps"] == 10 and process["train"]["lr"] == 1e-4
    assert process["train"]["noise_scheduler"] == "flowmatch"
    assert process["model"] == {"name_or_path": "black-forest-labs/FLUX.1-dev", "is_flux": True, "quantize": True}
    assert process["trigger_word"] == "m1na"
    sdxl = ai_toolkit_config(
        job(tmp_path, "sdxl"),
        {"config": {"name": "other"}, "meta": {"version": "2"}, "process": {"model": {"low_vram": True}}},
    )
    assert sdxl["config"]["process"][0]["model"] == {"name_or_path": CONFIG.base_model, "is_xl": True, "low_vram": True}
    assert sdxl["config"]["process"][0]["train"]["steps"] == 10
    assert sdxl["config"]["name"] == "other" and sdxl["meta"] == {"name": "[name]", "version": "2"}
    assert yaml.safe_load(yaml.safe_dump(doc)) == doc


def test_kohya_config_round_trips_through_tomllib(tmp_path: Path) -> None:
    extra = {"t5xxl": "/models/t5xxl_fp16.safetensors", "dataset": {"general": {"shuffle_caption": True}}}
    args, dataset = kohya_config(job(tmp_path), tmp_path / "out" / "d.toml", extra)
    assert args["network_module"] == "networks.lora_flux" and args["network_dim"] == 4
    assert args["max_train_steps"] == 10 and args["output_name"] == "mina-v1"
    assert args["t5xxl"] == "/models/t5xxl_fp16.safetensors" and "dataset" not in args
    assert dataset["general"] == {"caption_extension": ".txt", "shuffle_caption": True, "keep_tokens": 0}
    assert dataset["datasets"][0]["subsets"] == [{"image_dir": str(tmp_path / "data"), "num_repeats": 1}]
    assert tomllib.loads(toml_dumps(args)) == args
    assert tomllib.loads(toml_dumps(dataset)) == dataset
    sdxl_args, _ = kohya_config(job(tmp_path, "sdxl"), tmp_path / "d.toml")
    assert sdxl_args["network_module"] == "networks.lora" and "timestep_sampling" not in sdxl_args


def test_toml_dumps_quoting() -> None:
    data = {"a b": 'say "hi"\\\n', "n": None, "t": {"x": [1, 2.5, True], "inline": [{"k": 1}], "deep": {"y": "z"}}}
    assert tomllib.loads(toml_dumps(data)) == {
        "a b": 'say "hi"\\\n',
        "t": {"x": [1, 2.5, True], "inline": [{"k": 1}], "deep": {"y": "z"}},
    }
    with pytest.raises(ValueError, match=r"t\.x"):
        toml_dumps({"t": {"x": float("nan")}})


def test_expand_command() -> None:
    values = {"config": "/a b/c.yaml", "output": "/o", "dataset": "/d"}
    assert expand_command("accelerate launch train.py --config_file {config} --x={output}", values) == [
        "accelerate",
        "launch",
        "train.py",
        "--config_file",
        "/a b/c.yaml",
        "--x=/o",
    ]
    assert expand_command(["run", "{dataset}", "{json: 1}"], values) == ["run", "/d", "{json: 1}"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("steps: 12/100", (12, 100)),
        ("step 12/100", (12, 100)),
        ("Step 7 / 9, loss 0.3", (7, 9)),
        ("steps:  12%|███▏      | 12/100 [00:10<01:10, 1.2it/s, avr_loss=0.1]", (12, 100)),
        ("mina-v1:  24%|██▍       | 240/1000 [01:00<03:10, lr: 1.0e-04 loss: 3.8e-01]", (240, 1000)),
        ("caching latents: 100%|██████████| 20/20 [00:01<00:00]", None),
        ("epoch 1/10", None),
        ("steps: 120/100", None),
    ],
)
def test_progress_lines(line: str, expected: tuple[int, int] | None) -> None:
    assert parse_progress(line, progress_patterns("ai-toolkit", "mina-v1")) == expected


def test_custom_progress_pattern() -> None:
    patterns = progress_patterns("kohya", "x", r"it (\d+) of (\d+)")
    assert parse_progress("it 3 of 4", patterns) == (3, 4)
    assert all(isinstance(p, re.Pattern) for p in patterns)


def test_only_the_config_log_and_lora_are_left(stand_in: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    trainer(stand_in, "kohya").train(dataset, CONFIG, out, family="flux", name="n")
    assert sorted(p.name for p in out.iterdir()) == ["n.dataset.toml", "n.log", "n.safetensors", "n.toml"]
    assert os.environ.get("REELFORGE_LORA_CONFIG") is None  # the trainer's environment is its own
