"""Pure routing: which ComfyUI worker should run a job, decided over snapshots of the fleet (no I/O).

A job can run on a worker only if the worker is *eligible* (it has every node class and model file the
job names, and the label the job asks for) and *available* (healthy, not cooling down after a failure,
and with a free slot: our running + pending prompts below its capacity = 1 + queue_depth).

Among the available eligible workers the choice is, in order:

1. model affinity: a worker whose most recent job loaded the job's checkpoint / diffusion model (loading
   one costs seconds to minutes on a GPU, far more than waiting behind a short queue);
2. least busy: fewest of our prompts in flight there;
3. no eviction: a worker with no model loaded before one holding another model;
4. a stable tie-break: configuration order, then name.

``choose_worker`` returns ``None`` when eligible workers exist but none is available right now (the caller
waits) and raises ``NoEligibleWorker`` when no configured worker could ever run the job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from reelforge.comfy.errors import NoEligibleWorker
from reelforge.comfy.graph import ModelRef, affinity_models, model_refs, node_classes
from reelforge.comfy.types import Graph

__all__ = [
    "Requirement",
    "WorkerSnapshot",
    "any_eligible_healthy",
    "choose_worker",
    "eligibility",
    "rank",
]

_MAX_NAMED = 8  # how many missing classes / files a reason names before abbreviating


@dataclass(frozen=True)
class Requirement:
    """What a job needs from a worker."""

    node_classes: frozenset[str] = frozenset()
    models: frozenset[ModelRef] = frozenset()
    affinity: frozenset[ModelRef] = frozenset()
    label: str | None = None
    avoid: frozenset[str] = frozenset()  # worker names to use only when no other eligible worker is healthy

    @classmethod
    def for_graph(
        cls,
        graph: Graph,
        *,
        models: Iterable[ModelRef] | None = None,
        label: str | None = None,
        avoid: Iterable[str] = (),
    ) -> Requirement:
        """Derive the requirement from a graph's classes and loader inputs, plus extra model files."""
        refs = model_refs(graph) | set(models or ())
        return cls(
            node_classes=frozenset(node_classes(graph)),
            models=frozenset(refs),
            affinity=affinity_models(refs),
            label=label,
            avoid=frozenset(avoid),
        )


@dataclass(frozen=True)
class WorkerSnapshot:
    """The routing-relevant state of one worker at one instant.

    ``node_classes`` is ``None`` while the worker's capabilities are unknown (it has never answered a
    health check); such a worker is treated as possibly eligible, so a job waits for it rather than
    failing with ``NoEligibleWorker``.
    """

    name: str
    url: str = ""
    labels: frozenset[str] = frozenset()
    healthy: bool = True
    cooling_until: float = 0.0
    in_flight: int = 0  # ours, running + pending on this worker
    capacity: int = 2  # 1 running + queue_depth pending
    node_classes: frozenset[str] | None = frozenset()
    models: Mapping[str, frozenset[str]] = field(default_factory=dict)  # folder key -> file names
    last_models: frozenset[ModelRef] = frozenset()  # affinity models its latest job loads
    order: int = 0  # configuration order, for a stable tie-break

    @property
    def known(self) -> bool:
        return self.node_classes is not None

    @property
    def free_slots(self) -> int:
        return max(0, self.capacity - self.in_flight)

    def available(self, now: float) -> bool:
        """Healthy, not cooling down, and with a free slot."""
        return self.healthy and self.cooling_until <= now and self.in_flight < self.capacity

    def with_in_flight(self, in_flight: int) -> WorkerSnapshot:
        return replace(self, in_flight=in_flight)


def _names(items: Iterable[str]) -> str:
    ordered = sorted(items)
    shown = ", ".join(ordered[:_MAX_NAMED])
    if len(ordered) > _MAX_NAMED:
        shown += f" (+{len(ordered) - _MAX_NAMED} more)"
    return shown


def eligibility(snapshot: WorkerSnapshot, requirement: Requirement) -> str | None:
    """Why ``snapshot``'s worker can never run the job, or ``None`` if it can (health aside).

    A worker whose capabilities are unknown is only checked for its label.
    """
    reasons: list[str] = []
    # An unlabelled worker takes any job; a labelled one only jobs of its labels.
    if requirement.label is not None and snapshot.labels and requirement.label not in snapshot.labels:
        have = _names(snapshot.labels) if snapshot.labels else "none"
        reasons.append(f"lacks label '{requirement.label}' (has: {have})")
    if snapshot.node_classes is not None:
        missing_classes = requirement.node_classes - snapshot.node_classes
        if missing_classes:
            reasons.append(f"missing node classes: {_names(missing_classes)}")
        missing_models = [
            str(ref)
            for ref in requirement.models
            if ref.name not in snapshot.models.get(ref.folder, frozenset())
        ]
        if missing_models:
            reasons.append(f"missing model files: {_names(missing_models)}")
    return "; ".join(reasons) or None


def rank(snapshot: WorkerSnapshot, requirement: Requirement) -> tuple[int, int, int, int, str]:
    """Sort key among available eligible workers: affinity, least busy, no eviction, stable order.

    "No eviction": between equally busy workers without the job's model, one with no model loaded beats one
    holding another model (that model may be wanted again soon), so alternating jobs settle on separate
    workers instead of thrashing the first one.
    """
    shared = len(requirement.affinity & snapshot.last_models)
    evicts = int(bool(requirement.affinity) and not shared and bool(snapshot.last_models))
    return (-shared, snapshot.in_flight, evicts, snapshot.order, snapshot.name)


def choose_worker(
    snapshots: Sequence[WorkerSnapshot],
    requirement: Requirement,
    now: float,
) -> WorkerSnapshot | None:
    """Pick the worker for a job, ``None`` if every eligible worker is busy or unhealthy right now.

    Workers in ``requirement.avoid`` (they just failed this job) are left out while another eligible worker is
    healthy, even a busy one: the job waits for it rather than going back to the worker that failed it.

    Raises ``NoEligibleWorker`` (with a reason per worker) if no configured worker could ever run it.
    """
    reasons: dict[str, str] = {}
    candidates: list[WorkerSnapshot] = []
    others_healthy = False
    for snap in snapshots:
        why = eligibility(snap, requirement)
        if why is not None:
            reasons[snap.name] = why
            continue
        if snap.name not in requirement.avoid and snap.known and snap.healthy and snap.cooling_until <= now:
            others_healthy = True
        if snap.known and snap.available(now):
            candidates.append(snap)
    if others_healthy:
        candidates = [c for c in candidates if c.name not in requirement.avoid]
    if len(reasons) == len(snapshots):
        what = ", ".join(sorted(requirement.node_classes)) or "no node classes"
        raise NoEligibleWorker(
            f"no configured worker can run this job (needs {what}"
            + (f"; models {_names(str(m) for m in requirement.models)}" if requirement.models else "")
            + (f"; label '{requirement.label}'" if requirement.label else "")
            + ")",
            reasons=reasons if snapshots else {"(pool)": "no workers configured"},
        )
    if not candidates:
        return None
    return min(candidates, key=lambda s: rank(s, requirement))


def any_eligible_healthy(snapshots: Sequence[WorkerSnapshot], requirement: Requirement, now: float) -> bool:
    """True if some eligible worker is healthy and not cooling (possibly full): the job only has to wait."""
    return any(
        s.known and s.healthy and s.cooling_until <= now and eligibility(s, requirement) is None
        for s in snapshots
    )
