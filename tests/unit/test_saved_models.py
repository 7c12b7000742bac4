"""Model files that save nodes write without listing them in history (SaveLoRANode): found by prefix."""

from __future__ import annotations

from typing import Any

import pytest

from reelforge.comfy import ComfyClient, OutputError
from reelforge.comfy.graph import saved_models
from reelforge.comfy.types import SavedModel
from reelforge.jobs import find_saved

GRAPH: dict[str, dict[str, Any]] = {
    "3": {"class_type": "SaveLoRANode", "inputs": {"lora": ["2", 1], "prefix": "loras/mina_ab12"}},
    "7": {"class_type": "SaveLoRANode", "inputs": {"lora": ["2", 1]}},  # the node's default prefix
    "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}


def test_saved_models_of_executed_outputs_only() -> None:
    assert saved_models(GRAPH) == [
        SavedModel(node_id="3", folder="loras", prefix="loras/mina_ab12"),
        SavedModel(node_id="7", folder="loras", prefix="loras/ComfyUI_trained_lora"),
    ]
    assert [s.node_id for s in saved_models(GRAPH, ["3", "9"])] == ["3"]


class Lister(ComfyClient):
    def __init__(self, names: list[str]) -> None:
        super().__init__("http://127.0.0.1:9", use_websocket=False)
        self.names = names

    async def models(self, folder: str | None = None) -> list[str]:
        assert folder == "loras"
        return self.names


async def testfind_saved_matches_the_prefix_and_names_the_subfolder() -> None:
    client = Lister(["other.safetensors", "mina_ab12_16_steps_00001_.safetensors", "sub/mina_ab12_x.safetensors"])
    found = await find_saved(client, SavedModel(node_id="3", folder="loras", prefix="loras/mina_ab12"))
    assert [(f.filename, f.subfolder, f.type) for f in found] == [
        ("mina_ab12_16_steps_00001_.safetensors", "loras", "output")
    ]
    nested = await find_saved(client, SavedModel(node_id="3", folder="loras", prefix="loras/sub/mina_ab12"))
    assert [(f.filename, f.subfolder) for f in nested] == [("mina_ab12_x.safetensors", "loras/sub")]
    with pytest.raises(OutputError, match="wrote no file"):
        await find_saved(client, SavedModel(node_id="3", folder="loras", prefix="loras/nobody"))
    with pytest.raises(OutputError, match="outside output/loras"):
        await find_saved(client, SavedModel(node_id="3", folder="loras", prefix="elsewhere/mina"))
    await client.aclose()
