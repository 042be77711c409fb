"""A job of the report and what the report keeps of it: its record (result.JobResult), its gradients
reduced to a GradSummary, its outcomes; the arm it belongs to, and the arms' order and references.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import stats
from ..importance import GradCube
from ..records import read_jsonl
from ..result import JobResult

STRATEGY_ORDER = ("none", "uniform", "proportional", "random")


class Arm(NamedTuple):
    """What a table row compares: jobs of one arm differ only in their seed. A new axis (an alpha mode,
    an algorithm) is a field here with a default, filled in `arm_of`."""

    model: str
    task: str
    strategy: str
    budget: str


def arm_of(job: Job) -> Arm:
    return Arm(job.model, job.task, job.strategy, job.budget)


@dataclass
class GradSummary:
    """One job's training-phase gradients, reduced: all the report keeps of them."""

    n_steps: int
    modules: list[str]
    importance: np.ndarray  # S(l), summed over all modules
    module_importance: dict[str, np.ndarray]  # S(l) of one projection type
    module_totals: dict[str, float]
    early_late: dict[str, float]  # stats.early_late_stability of the steps x layers sums

    @property
    def num_layers(self) -> int:
        return self.importance.size


def summarise(cube: GradCube, early: float, late: float) -> GradSummary:
    return GradSummary(
        n_steps=len(cube.steps), modules=list(cube.modules), importance=cube.layer_importance(),
        module_importance={m: cube.layer_importance({m}) for m in cube.modules},
        module_totals=cube.module_totals(),
        early_late=stats.early_late_stability(cube.step_layer(), early, late))


@dataclass
class Outcomes:
    """Per-question correctness of one evaluation, keyed by question id."""

    ids: list[str]
    correct: np.ndarray  # bool, aligned with ids


def read_outcomes(path: Path) -> Outcomes | None:
    rows = read_jsonl(path)
    if not rows:
        return None
    # the id where the task has one, else the position; both are stable across runs of one task
    return Outcomes(ids=[str(r.get("id", r.get("index"))) for r in rows],
                    correct=np.array([bool(r.get("correct")) for r in rows], dtype=bool))


@dataclass
class Job:
    sweep: Path
    name: str  # the job folder's name, or "<n>_(no folder)" for a job that never started
    status: str  # ok | failed | missing | what else result.json may hold (dry_run, running)
    detail: str = ""
    strategy: str = "?"
    budget: str = "?"
    seed: int | None = None
    model: str = "?"
    task: str = "?"
    budget_fraction: float | None = None
    result: JobResult | None = None
    grads: GradSummary | None = None
    outcomes: Outcomes | None = None
    superseded_by: str | None = None

    @property
    def arm(self) -> Arm:
        return arm_of(self)

    @property
    def where(self) -> str:
        return f"{self.sweep.parent.name}/{self.sweep.name}/{self.name}"

    @property
    def ranks(self) -> list[int] | None:
        return self.result.allocation.ranks if self.result and self.result.allocation else None

    @property
    def params(self) -> int | None:
        p = self.result.params if self.result else None
        if p is None:
            return None
        return p.built if p.built is not None else p.planned


def active(jobs: list[Job]) -> list[Job]:
    return [j for j in jobs if j.status == "ok" and j.superseded_by is None]


def _strategy_key(strategy: str) -> tuple:
    return (STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER), strategy)


def arm_sort_key(arm: Arm, fraction: float | None = None) -> tuple:
    return (arm.model, arm.task, _strategy_key(arm.strategy), -(fraction if fraction is not None else 0.0),
            arm.budget, *arm[4:])


def arms_of(jobs: list[Job]) -> dict[Arm, list[Job]]:
    """Finished jobs by arm, seeds in order; arms in report order."""
    out: dict[Arm, list[Job]] = defaultdict(list)
    for job in active(jobs):
        out[job.arm].append(job)
    fractions = {arm: next((j.budget_fraction for j in js if j.budget_fraction is not None), None)
                 for arm, js in out.items()}
    return {arm: sorted(out[arm], key=lambda j: (j.seed is None, j.seed or 0))
            for arm in sorted(out, key=lambda a: arm_sort_key(a, fractions[a]))}


def uniform_reference(arms: dict[Arm, list[Job]], arm: Arm) -> Arm | None:
    """The uniform arm a strategy is compared with: same model, task and budget; else the full budget."""
    same = arm._replace(strategy="uniform")
    if same in arms:
        return same
    candidates = [a for a in arms if a._replace(budget=arm.budget) == same]
    full = [a for a in candidates if any(j.budget_fraction == 1.0 for j in arms[a])]
    return (full or candidates or [None])[0]


def base_reference(arms: dict[Arm, list[Job]], arm: Arm) -> Arm | None:
    """The base-model arm (strategy none) of the same model and task; its budget is irrelevant."""
    found = [a for a in arms if (a.model, a.task, a.strategy) == (arm.model, arm.task, "none")]
    return found[0] if found else None
