"""Register prefect.yaml's deployments through Prefect's Python API: `reelforge deploy`.

Why not only `prefect --no-prompt deploy --all`: prefect 3.8.8's CLI registers the first deployment, then asks
for the pool's online workers with ``limit: null`` (``read_workers_for_work_pool``), which its own server refuses
(422), so the command fails after the first deployment and registers none of the others. The same file is
read here and every deployment (description, parameters, cron schedules, work pool, event triggers) is applied
with ``Flow.ato_deployment`` + ``RunnerDeployment.aapply``, the API the CLI itself ends in. A process worker
started in the repository (``prefect worker start --pool reelforge-process``) runs them from this folder.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect import Flow
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from reelforge.errors import InputRejected

__all__ = ["DeployRejected", "deploy_all", "load_deployments"]

ROOT = Path(__file__).resolve().parents[1]


class DeployRejected(InputRejected):
    """prefect.yaml or a deployment in it cannot be used (named with the file and the deployment)."""


def load_deployments(path: Path) -> list[dict[str, Any]]:
    """The ``deployments`` list of a prefect.yaml, each with a name and an entrypoint."""
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DeployRejected(f"{path}: cannot read it: {exc}") from exc
    deployments = spec.get("deployments") if isinstance(spec, dict) else None
    if not isinstance(deployments, list) or not deployments:
        raise DeployRejected(f"{path}: no 'deployments' list")
    for i, item in enumerate(deployments):
        if not isinstance(item, dict) or not item.get("name") or ":" not in str(item.get("entrypoint", "")):
            raise DeployRejected(f"{path}: deployment #{i + 1} needs a name and an entrypoint 'file.py:flow'")
    return deployments


def _flow(path: Path, item: dict[str, Any]) -> Flow[..., Any]:
    module_path, _, attr = str(item["entrypoint"]).partition(":")
    module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, attr, None)
    if not isinstance(flow, Flow):
        raise DeployRejected(f"{path}: deployment {item['name']!r}: {item['entrypoint']} is not a flow")
    return flow


async def deploy_all(path: Path = ROOT / "prefect.yaml", *, names: Collection[str] | None = None
                     ) -> dict[str, UUID]:
    """Apply the deployments of ``path`` (only ``names`` when given) to the server in PREFECT_API_URL; returns
    ``{flow name/deployment name: id}``."""
    deployments = load_deployments(path)
    unknown = set(names or ()) - {str(d["name"]) for d in deployments}
    if unknown:
        raise DeployRejected(f"{path}: no deployment named {', '.join(sorted(unknown))}")
    applied: dict[str, UUID] = {}
    for item in deployments:
        if names and item["name"] not in names:
            continue
        flow = _flow(path, item)
        schedules = [Cron(s["cron"], timezone=s.get("timezone")) for s in item.get("schedules") or [] if "cron" in s]
        triggers: list[Any] = [DeploymentEventTrigger(**t) for t in item.get("triggers") or []]
        pool = (item.get("work_pool") or {}).get("name")
        deployment = await flow.ato_deployment(
            name=str(item["name"]), description=item.get("description"), parameters=item.get("parameters") or {},
            schedules=schedules or None, triggers=triggers or None, work_pool_name=pool,
            tags=item.get("tags"),
        )
        applied[f"{flow.name}/{item['name']}"] = await deployment.aapply(work_pool_name=pool)
    return applied
