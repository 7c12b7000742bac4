"""Payloads captured from a real ComfyUI 0.3.64 server (shared/reference/comfyui-api.md, section c)."""

from __future__ import annotations

from typing import Any

# c.4: EmptyImage without `height` feeding SaveImage node "2" -> 400.
MISSING_HEIGHT_400: dict[str, Any] = {
    "error": {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "",
        "extra_info": {},
    },
    "node_errors": {
        "1": {
            "errors": [
                {
                    "type": "required_input_missing",
                    "message": "Required input is missing",
                    "details": "height",
                    "extra_info": {"input_name": "height"},
                }
            ],
            "dependent_outputs": ["2"],
            "class_type": "EmptyImage",
        }
    },
}
