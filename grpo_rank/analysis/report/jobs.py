"""A job of the report and what the report keeps of it: its record (result.JobResult), its gradients
reduced to a GradSummary (its per-reward gradients, when recorded, to a RewardSummary), its outcomes;
the arm it belongs to, and the arms' order and references.

An arm is what a table row compares: model, task, strategy, budget, and the two axes that change what
a re-allocation does to gradient norms, the LoRA alpha mode (lora.alpha_mode) and the importance signal
the ranks were allocated from (profile.signal); then the training objective (algorithm.name) and the
uniform rank lora.r (a capacity curve's arms differ only in it). The uniform reference of an arm has
the same model, task, alpha mode, algorithm and lora.r: the signal does not change a uniform run. Last,
the training length grpo.steps: a sweep over it asks when accuracy stops rising, and an arm is compared
with the same arm trained for fewer steps (shorter_reference).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from grpo_rank.allocation.allocate import STRATEGIES
from grpo_rank.allocation.importance import ALPHA_MODES, SAME_AT_UNIFORM_RANK, SIGNALS, GradCube
from grpo_rank.analysis import stats
from grpo_rank.objective.algorithms import ALGORITHMS
from grpo_rank.objective.answers import counts
from grpo_rank.objective.rewards import judge, well_formed
from grpo_rank.record.files import read_jsonl
from grpo_rank.record.result import JobResult

STRATEGY_ORDER = ("none", "uniform", "proportional", "random", "shuffled", "adalora")
# ranks placed by the importance map; shuffled keeps proportional's ranks but not their places
GRADIENT_AWARE = ("proportional",)
# strategies whose ranks move during training: their records carry each step's rank (RankTrajectory)
DYNAMIC = tuple(name for name, spec in STRATEGIES.items() if spec.adaptive)
# records from before the algorithm axis ran TRL 1.16's default GRPO loss, which is dapo; also the
# config's default
DEFAULT_ALGORITHM = "dapo"
DEFAULT_SCORING = "any"  # eval.scoring's default; the tables name another where a job used one


class Arm(NamedTuple):
    """What a table row compares: jobs of one arm differ only in their seed. A new axis is a field here
    with a default, filled in `arm_of`; markdown shows a field that is not at its default in some arm,
    and lora.r and grpo.steps where arms differ in them (varying)."""

    model: str
    task: str
    strategy: str
    budget: str
    alpha_mode: str = "fixed"
    signal: str = "lora"
    algorithm: str = DEFAULT_ALGORITHM
    r: int | None = None  # lora.r; None for the base model, or a record that does not say
    steps: int | None = None  # grpo.steps; None for the base model, or a record that does not say


def arm_of(job: Job) -> Arm:
    spec = STRATEGIES.get(job.strategy)
    # the base model trains nothing, and a strategy that reads no profile (uniform, random) runs the same
    # whatever profile.signal says: neither splits into arms by them
    base = job.strategy == "none"
    alpha_mode = job.alpha_mode if not base else Arm._field_defaults["alpha_mode"]
    signal = job.signal if spec is None or spec.needs_profile else Arm._field_defaults["signal"]
    algorithm = job.algorithm if not base else DEFAULT_ALGORITHM
    return Arm(job.model, job.task, job.strategy, job.budget, alpha_mode, signal, algorithm,
               None if base else job.r_uniform, None if base else job.steps)


COUNTS = ("r", "steps")  # the arm fields without a default: named and shown only where arms differ in them


def varying(arms) -> frozenset[str]:
    """Which of lora.r and grpo.steps the arms differ in (the base model, without either, aside): only
    those do names and tables show, so a sweep at one lora.r and one length reads as before they existed."""
    arms = list(arms)
    return frozenset(f for f in COUNTS if len({getattr(a, f) for a in arms if getattr(a, f) is not None}) > 1)


def arm_name(arm: Arm, show: Collection[str] = ()) -> str:
    """strategy/budget, then the algorithm, alpha mode and signal where they are not the defaults, and
    lora.r and grpo.steps where `show` names them (`varying` of the arms it is told apart from)."""
    extra = [f"{f}={getattr(arm, f)}" for f in ("algorithm", "alpha_mode", "signal")
             if getattr(arm, f) != Arm._field_defaults[f]]
    if "r" in show and arm.r is not None:
        extra.insert(1 if arm.algorithm != DEFAULT_ALGORITHM else 0, f"r={arm.r}")
    if "steps" in show and arm.steps is not None:
        extra.append(f"steps={arm.steps}")
    return "/".join([arm.strategy, arm.budget]) + (f" ({', '.join(extra)})" if extra else "")


def alpha_mode_of(lora: dict) -> str:
    """lora.alpha_mode of a record's config; records from before it existed say use_rslora: true."""
    return str(lora.get("alpha_mode") or ("rslora" if str(lora.get("use_rslora")).lower() == "true" else "fixed"))


@dataclass
class ModuleNorms:
    """One signal's module norms, reduced: per (layer, module) over the training steps and at the first."""

    modules: list[str]
    mean: np.ndarray  # (L, M): each module's norm averaged over the steps
    # (L, M): at the first recorded step with any gradient, i.e. at initialisation; None when no step had one
    first: np.ndarray | None
    first_step: int | None
    # steps whose every norm is zero: under GRPO, a step where no group had reward spread has no gradient,
    # and an optimizer step on a zero gradient leaves LoRA's B at zero, so the next step is still "at init"
    empty_steps: list[int]

    @classmethod
    def of(cls, cube: GradCube) -> ModuleNorms:
        has_grad = cube.cube.reshape(len(cube.steps), -1).any(axis=1)
        empty = [int(s) for s in cube.steps[~has_grad]]
        if not has_grad.any():
            return cls(list(cube.modules), cube.cube.mean(axis=0), None, None, empty)
        t = int(np.argmax(has_grad))
        return cls(list(cube.modules), cube.cube.mean(axis=0), cube.cube[t].copy(), int(cube.steps[t]), empty)


@dataclass
class GradSummary:
    """One job's training-phase gradients, reduced: all the report keeps of them."""

    n_steps: int
    modules: list[str]
    importance: np.ndarray  # S(l), summed over all modules
    norms: ModuleNorms  # the LoRA module norms
    module_totals: dict[str, float]
    early_late: dict[str, float]  # stats.early_late_stability of the steps x layers sums
    full_weight: ModuleNorms | None = None  # ||dL/dW|| of the frozen projections, when recorded

    @property
    def num_layers(self) -> int:
        return self.importance.size

    def module_importance(self, module: str) -> np.ndarray:
        """S(l) of one projection type."""
        return self.norms.mean[:, self.modules.index(module)]


def summarise(cube: GradCube, early: float, late: float, full_weight: GradCube | None = None) -> GradSummary:
    return GradSummary(
        n_steps=len(cube.steps), modules=list(cube.modules), importance=cube.layer_importance(),
        norms=ModuleNorms.of(cube), module_totals=cube.module_totals(),
        early_late=stats.early_late_stability(cube.step_layer(), early, late),
        full_weight=ModuleNorms.of(full_weight) if full_weight is not None else None)


@dataclass
class RankTrajectory:
    """The ranks of a run whose ranks move (strategy in DYNAMIC), per training step and layer: the
    layer's rank summed over its modules / its number of modules (trajectories.read_rank_trajectory)."""

    steps: np.ndarray  # (T,) the recorded training steps, ascending
    layer_rank: np.ndarray  # (T, L) float32; NaN where a layer has no record at a step


@dataclass
class RewardSummary:
    """One job's per-reward gradient records (reward_grads.parquet, `profile.per_reward=true`), reduced
    (rewards.read_reward_summary): per component (each reward, then the KL term "kl" when beta > 0),
    S_k(l), Eq. 2 on that component's gradient, over one phase's steps."""

    phase: str  # "train" when the job recorded it, else "profile"
    n_steps: int
    components: list[str]  # the rewards in config order, then "kl" when recorded
    importance: np.ndarray  # (K, L): S_k(l), row k for components[k]
    combined: np.ndarray | None  # (L,): S(l) of the step's own gradient, same phase (grad_norms.parquet)

    @property
    def num_layers(self) -> int:
        return self.importance.shape[1]


@dataclass
class Outcomes:
    """Per-question correctness of one evaluation, keyed by question id; and, where the rows allow, each
    reply judged under both scorings and whether it is well-formed (None where they do not)."""

    ids: list[str]
    correct: np.ndarray  # bool, aligned with ids: as the job's eval.scoring counted
    tagged_correct: np.ndarray | None = None  # bool: the tagged answer is correct (scoring "tagged")
    any_correct: np.ndarray | None = None  # bool: the answer, tagged or not, is correct (scoring "any")
    well_formed: np.ndarray | None = None  # bool: rewards.well_formed(reply)


def _scored(row: dict) -> tuple[bool, bool, bool | None] | None:
    """(tagged correct, any correct, well-formed) of one outcome row: as recorded by an evaluation that
    records all three; else judged again from its reply and gold when it has them; else from the
    judgement it recorded (value_correct, tagged; no reply, no well-formedness); else None."""
    if all(k in row for k in ("tagged_correct", "value_correct", "well_formed")):
        return bool(row["tagged_correct"]), bool(row["value_correct"]), bool(row["well_formed"])
    if isinstance(row.get("reply"), str) and row.get("gold") is not None:
        try:
            j = judge(row["reply"], str(row["gold"]))
        except ValueError:  # a gold that is not a number: no judgement to make
            return None
        return counts(j, "tagged"), counts(j, "any"), well_formed(row["reply"])
    if "value_correct" in row and "tagged" in row:
        return bool(row["value_correct"] and row["tagged"]), bool(row["value_correct"]), None
    return None


def read_outcomes(path: Path) -> Outcomes | None:
    rows = read_jsonl(path)
    if not rows:
        return None
    scored = [_scored(r) for r in rows]
    both = all(s is not None for s in scored)
    formed = both and all(s[2] is not None for s in scored)
    # the id where the task has one, else the position; both are stable across runs of one task
    return Outcomes(ids=[str(r.get("id", r.get("index"))) for r in rows],
                    correct=np.array([bool(r.get("correct")) for r in rows], dtype=bool),
                    tagged_correct=np.array([s[0] for s in scored], dtype=bool) if both else None,
                    any_correct=np.array([s[1] for s in scored], dtype=bool) if both else None,
                    well_formed=np.array([s[2] for s in scored], dtype=bool) if formed else None)


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
    alpha_mode: str = "fixed"  # lora.alpha_mode
    signal: str = "lora"  # profile.signal
    alpha: float | None = None  # lora.alpha
    r_uniform: int | None = None  # lora.r, the uniform rank
    steps: int | None = None  # grpo.steps, the training length
    algorithm: str = DEFAULT_ALGORITHM  # algorithm.name
    result: JobResult | None = None
    grads: GradSummary | None = None
    outcomes: Outcomes | None = None
    trajectory: RankTrajectory | None = None  # per-step ranks, for a strategy in DYNAMIC
    rewards: RewardSummary | None = None  # per-reward gradients, for a job with reward_grads.parquet
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
    def rank_uniform(self) -> int | None:
        """lora.r; for a record without it (hand-written ones), the mean rank over the budget fraction,
        since the budget is r * L * fraction."""
        if self.r_uniform is not None:
            return self.r_uniform
        if not self.ranks:
            return None
        return max(1, round(sum(self.ranks) / len(self.ranks) / (self.budget_fraction or 1.0)))

    @property
    def params(self) -> int | None:
        p = self.result.params if self.result else None
        if p is None:
            return None
        return p.built if p.built is not None else p.planned

    @property
    def capacity_params(self) -> int | None:
        """The parameters the job's result rests on: its trainable count, or for a strategy whose ranks
        shrink while it trains (adalora) those of the ranks it kept (AdaptiveInfo.final_params)."""
        adaptive = self.result.adaptive if self.result else None
        return adaptive.final_params if adaptive is not None else self.params


def scoring_of(job: Job) -> str:
    """The scorer behind a job's accuracy (eval.scoring, answers.SCORING): its record says; records from
    before EvalSummary.scoring keep it in the decoding settings, and older ones scored with `any`."""
    ev = job.result.eval if job.result else None
    if ev is None:
        return ""
    return str(ev.scoring or ev.generation.get("scoring") or DEFAULT_SCORING)


def seed_label(job: Job) -> str:
    return f"s{job.seed}" if job.seed is not None else "s?"


def active(jobs: list[Job]) -> list[Job]:
    return [j for j in jobs if j.status == "ok" and j.superseded_by is None]


def _order_key(value: str, order) -> tuple:
    order = list(order)
    return (order.index(value) if value in order else len(order), value)


def arm_sort_key(arm: Arm, fraction: float | None = None) -> tuple:
    return (arm.model, arm.task, _order_key(arm.strategy, STRATEGY_ORDER),
            -(fraction if fraction is not None else 0.0), arm.budget, _order_key(arm.alpha_mode, ALPHA_MODES),
            _order_key(arm.signal, SIGNALS), _order_key(arm.algorithm, ALGORITHMS), (arm.r is None, arm.r or 0),
            (arm.steps is None, arm.steps or 0))


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
    """The uniform arm a strategy is compared with: same model, task, alpha mode, algorithm, lora.r, length
    (grpo.steps) and budget; else the full budget. Another alpha mode's only where it is the same model
    (SAME_AT_UNIFORM_RANK: a per_rank arm without per_rank uniform runs takes the fixed ones). The scaling is
    what moves the norms."""
    found = _uniform_of(arms, arm)
    alias = SAME_AT_UNIFORM_RANK.get(arm.alpha_mode)
    if found is None and alias is not None:
        found = _uniform_of(arms, arm._replace(alpha_mode=alias))
    return found


def _uniform_of(arms: dict[Arm, list[Job]], arm: Arm) -> Arm | None:
    same = arm._replace(strategy="uniform", signal=Arm._field_defaults["signal"])
    if same in arms:
        return same
    candidates = [a for a in arms if a._replace(budget=arm.budget) == same]
    full = [a for a in candidates if any(j.budget_fraction == 1.0 for j in arms[a])]
    return (full or candidates or [None])[0]


def shorter_reference(arms: dict[Arm, list[Job]], arm: Arm) -> Arm | None:
    """The same arm trained for fewer steps, the longest such (does accuracy still rise at this length?);
    None when the arms have one length."""
    if arm.steps is None:
        return None
    shorter = [a for a in arms if a.steps is not None and a.steps < arm.steps and a._replace(steps=arm.steps) == arm]
    return max(shorter, key=lambda a: a.steps, default=None)


def deterministic(arm: Arm, arm_jobs: list[Job]) -> bool:
    """Whether the arm's seeds are copies of one evaluation: the base model (strategy none) trains
    nothing, and under greedy decoding (every job's recorded generation without do_sample) its replies
    are the same whatever the seed."""
    return arm.strategy == "none" and not any(
        j.result and j.result.eval and j.result.eval.generation.get("do_sample") for j in arm_jobs)


def evaluations(arm: Arm, arm_jobs: list[Job]) -> list[Job]:
    """The arm's jobs with an evaluation, one per seed; of a deterministic arm only the first: its
    other seeds repeat it, and counting copies as seeds would fake a spread (or its absence)."""
    done = [j for j in arm_jobs if j.result is not None and j.result.eval is not None]
    return done[:1] if deterministic(arm, arm_jobs) else done


def base_reference(arms: dict[Arm, list[Job]], arm: Arm) -> Arm | None:
    """The base-model arm (strategy none) of the same model and task; its budget, algorithm and lora.r
    are irrelevant: it trains nothing."""
    found = [a for a in arms if (a.model, a.task, a.strategy) == (arm.model, arm.task, "none")]
    return found[0] if found else None
