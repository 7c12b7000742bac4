"""Who is running: the current flow run and task run ids, read from Prefect's run context (None outside one)."""

from __future__ import annotations

from prefect.context import FlowRunContext, TaskRunContext

__all__ = ["current_flow_run_id", "current_task_run"]


def current_flow_run_id() -> str | None:
    """The flow run id of the flow or task running now (a task knows its flow run too)."""
    task = TaskRunContext.get()
    if task is not None and task.task_run.flow_run_id:
        return str(task.task_run.flow_run_id)
    flow = FlowRunContext.get()
    return str(flow.flow_run.id) if flow and flow.flow_run else None


def current_task_run() -> tuple[str, str] | None:
    """``(task run id, task run name)`` of the task running now."""
    task = TaskRunContext.get()
    return (str(task.task_run.id), task.task_run.name) if task is not None else None
