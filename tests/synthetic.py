"""A synthetic sweep in the real record format, at any size: result.json (a valid JobResult, written by
result.write_result), grad_norms.parquet (records.write_grad_records) and eval_outcomes.jsonl, in job
folders as Hydra writes them (`.hydra/overrides.yaml`, and `multirun.yaml` in the sweep folder). For the
report's benchmark and tests; nothing here trains.

    python -m tests.synthetic OUT --jobs 30 --steps 1000 --layers 30   # paper-length, 420 matrices
    python -m tests.synthetic OUT --jobs 6 --steps 20 --layers 6 --layout overrides

    python -m tests.synthetic OUT --jobs 12 --steps 20 --layers 16 --alpha-modes fixed rslora \
        --strategies uniform proportional --full-weight --noise 0.05      # planted scaling slopes -1/2 and 0
    python -m tests.synthetic OUT --jobs 18 --steps 8 --layers 6 --strategies uniform \
        --algorithms grpo sft --lora-r 2 4 8                               # a capacity curve per algorithm
    python -m tests.synthetic OUT --jobs 4 --steps 8 --layers 6 --strategies uniform adalora
    python -m tests.synthetic OUT --jobs 4 --steps 8 --layers 6 --strategies uniform \
        --per-reward                                                       # planted per-reward landscapes

Jobs run over `strategies` x `algorithms` x `lora_rs` x `alpha_modes` x seeds (strategy outer, as
Hydra's basic sweeper orders `strategy=... algorithm=... lora.r=... lora.alpha_mode=... seed=...`; each
of the last three is an override only when more than one value is given). The algorithm None (the
default) writes records without the `algorithm` key, as before the axis existed. Accuracy grows by 0.03
per doubling of lora.r over 8. An adalora job's `rank` column moves during training (adalora_ranks);
its record's allocation holds the final per-layer ranks. Layouts: `numbered` names job folders
`<n>_<strategy>_<budget>_s<seed>` (what conf/config.yaml wrote before folders were named by the swept
keys), `overrides` names them from the job's overrides (`seed-0_strategy-uniform`, grpo_rank/sweep/naming.py).

Gradient norms are drawn so that the statistics are non-trivial and the scaling artefact is known: a
module's norm is base(t, l, m) * s(r) sqrt(r) / (s(r0) sqrt(r0)) * (r / r0)^amplification * noise, with
base a per-layer U-shaped profile with a seed's noise, times module weights and a drift over steps; s(r)
the LoRA scaling of the job's alpha mode (importance.lora_scaling; r0 = lora.r), so the planted log-log
slope of norm against rank is -1/2 (fixed), 0 (rslora) or +1/2 (per_rank) plus `amplification`, the
part that scaling does not explain; noise lognormal(0, `noise`) per step, layer and module. A and B
split each module's norm at a random angle. With `full_weight`, W rows ("W": ||dL/dW||) hold
10 * base * (r / r0)^amplification * noise: no scaling, as for the real frozen weights. The default
alpha mode, per_rank, gives the sqrt(rank / 8) rank effect the golden report tables were made with.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from grpo_rank.allocation.allocate import Bounds, allocate, budget_total
from grpo_rank.allocation.importance import PROJECTIONS, lora_scaling
from grpo_rank.analysis.stats import wilson_interval
from grpo_rank.objective.algorithms import ALGORITHMS
from grpo_rank.record.files import GRADS, OUTCOMES, REWARD_COLUMNS, REWARD_GRADS, write_grad_records
from grpo_rank.record.result import Allocation, EvalSummary, JobIdentity, JobResult, Params, TrainInfo, write_result

STRATEGIES = ("uniform", "proportional", "random")
ACCURACY = {"none": 0.2, "uniform": 0.5, "proportional": 0.52, "random": 0.47}
MODEL, TASK, R, ALPHA = "synthetic", "arithmetic", 8, 16.0


def layer_profile(layers: int, seed: int) -> np.ndarray:
    """A U-shaped per-layer profile (high at the ends, as gradient maps often are) with a seed's noise."""
    x = np.linspace(-1, 1, layers)
    return (1 + x ** 2) * np.random.default_rng(1000 + seed).uniform(0.8, 1.2, layers)


def adalora_ranks(steps: int, layers: int, n_modules: int, r: int, seed: int) -> np.ndarray:
    """(steps, layers, modules) ranks of a synthetic adalora run: every module at init_r = 3r/2 (r // 2
    more than r) at the first step, moving linearly (rounded) to its target at the last. A layer's target
    is r plus a shift following the seed's layer profile (their sum 0 before clipping at 1); its modules
    sit at alternately one below and one above it (the last at it when their number is odd), so the
    final per-layer mean ranks are those integers and the steps between are not."""
    init = r + r // 2
    profile = layer_profile(layers, seed)
    spread = np.ptp(profile)
    shift = np.rint((profile - profile.mean()) / spread * r / 2).astype(int) if spread > 0 else np.zeros(layers, int)
    shift[-1] -= shift.sum()
    final = np.maximum(r + shift, 1)
    offsets = np.array([1 if m % 2 else -1 for m in range(n_modules)])
    if n_modules % 2:
        offsets[-1] = 0
    target = final[:, None] + offsets[None, :]
    frac = np.linspace(0.0, 1.0, steps)[:, None, None] if steps > 1 else np.zeros((1, 1, 1))
    return np.maximum(np.rint(init + (target - init) * frac), 0).astype(np.int16)


def grad_columns(phase: str, steps: int, ranks: list[int], modules: tuple[str, ...], rng: np.random.Generator,
                 profile: np.ndarray, first_step: int = 1, alpha_mode: str = "per_rank", noise: float = 0.3,
                 amplification: float = 0.0, full_weight: np.random.Generator | None = None,
                 r0: int = R) -> dict[str, np.ndarray]:
    """One phase's records: steps x layers x modules x (A, B) rows, in the profiler's row order; then, when
    `full_weight` (the generator of their noise) is given, steps x layers x modules W rows. `r0` is lora.r."""
    layers, n_mod = len(ranks), len(modules)
    r = np.asarray(ranks, dtype=float)
    weight = np.linspace(1.0, 2.0, n_mod)
    drift = 1 + 0.5 * np.linspace(0, 1, steps)[:, None] * np.linspace(-1, 1, layers)[None, :]
    base = profile[None, :, None] * drift[:, :, None] * weight[None, None, :]
    real = (r / r0) ** amplification  # a rank effect beyond the scaling; 1.0 exactly when there is none
    scaling = (lora_scaling(alpha_mode, ALPHA, r0, r) * np.sqrt(r)
               / (lora_scaling(alpha_mode, ALPHA, r0, r0) * np.sqrt(r0)))
    module = base * scaling[None, :, None] * rng.lognormal(0, noise, (steps, layers, n_mod)) * real[None, :, None]
    angle = rng.uniform(0.05, 0.5, module.shape)  # mostly B: A's gradient starts at zero
    ab = np.stack([module * np.sin(angle), module * np.cos(angle)], axis=-1)  # (T, L, M, 2)
    per_step = layers * n_mod * 2
    n = steps * per_step
    cols = {
        "phase": np.full(n, phase),
        "step": np.repeat(np.arange(first_step, first_step + steps, dtype=np.int32), per_step),
        "layer": np.tile(np.repeat(np.arange(layers, dtype=np.int16), n_mod * 2), steps),
        "module": np.tile(np.repeat(np.array(modules), 2), steps * layers),
        "matrix": np.tile(np.array(["A", "B"]), steps * layers * n_mod),
        "norm": ab.reshape(-1).astype(np.float32),
        "rank": np.tile(np.repeat(np.asarray(ranks, dtype=np.int16), n_mod * 2), steps),
        "scaling": np.tile(np.repeat(lora_scaling(alpha_mode, ALPHA, r0, r).astype(np.float32), n_mod * 2), steps),
    }
    if full_weight is None:
        return cols
    w = 10 * base * full_weight.lognormal(0, noise, base.shape) * real[None, :, None]
    n_w = w.size
    w_cols = {"phase": np.full(n_w, phase),
              "step": np.repeat(np.arange(first_step, first_step + steps, dtype=np.int32), layers * n_mod),
              "layer": np.tile(np.repeat(np.arange(layers, dtype=np.int16), n_mod), steps),
              "module": np.tile(np.array(modules), steps * layers), "matrix": np.full(n_w, "W"),
              "norm": w.reshape(-1).astype(np.float32),
              "rank": np.tile(np.repeat(np.asarray(ranks, dtype=np.int16), n_mod), steps),
              "scaling": np.tile(np.repeat(lora_scaling(alpha_mode, ALPHA, r0, r).astype(np.float32), n_mod), steps)}
    return {k: np.concatenate([cols[k], w_cols[k]]) for k in cols}


def reward_profiles(layers: int) -> dict[str, np.ndarray]:
    """The planted per-reward landscapes (`per_reward`): per component, the per-layer factor of its module
    norms. "format" has its gradient in layers 0-1 (1.0 there, 0.01 elsewhere); "correctness" is larger
    in every layer but spread over the rest (2.0 on layers 0-1, 10.0 elsewhere), so format dominates
    layers 0-1 by its own share while correctness has the largest norm everywhere; the KL term ("kl") is
    flat (0.5)."""
    early = np.arange(layers) < 2
    return {"format": np.where(early, 1.0, 0.01), "correctness": np.where(early, 2.0, 10.0),
            "kl": np.full(layers, 0.5)}


def reward_columns(phase: str, steps: int, ranks: list[int], modules: tuple[str, ...],
                   profiles: dict[str, np.ndarray], scale: float = 1.0, first_step: int = 1,
                   alpha_mode: str = "per_rank", r0: int = R) -> dict[str, np.ndarray]:
    """One phase's reward_grads.parquet rows, as reward_split.RewardGradients writes them: per step, per
    component, every layer x module x (A, B). Component k's module norm at step t is exactly
    scale * profiles[k](l) * w(m) * (1 + t / steps) (w as grad_columns'), split into A and B at a fixed
    angle: no noise, so S_k(l) is proportional to profiles[k](l) and every statistic is known."""
    layers, n_mod, n_comp = len(ranks), len(modules), len(profiles)
    weight = np.linspace(1.0, 2.0, n_mod)
    t = np.arange(first_step, first_step + steps)
    module = (scale * (1 + t / steps)[:, None, None, None] * np.stack(list(profiles.values()))[None, :, :, None]
              * weight[None, None, None, :])  # (T, K, L, M)
    ab = np.stack([module * np.sin(0.3), module * np.cos(0.3)], axis=-1)
    per = layers * n_mod * 2
    n = steps * n_comp * per
    scaling = lora_scaling(alpha_mode, ALPHA, r0, np.asarray(ranks, dtype=float)).astype(np.float32)
    return {
        "phase": np.full(n, phase),
        "step": np.repeat(t.astype(np.int32), n_comp * per),
        "layer": np.tile(np.repeat(np.arange(layers, dtype=np.int16), n_mod * 2), steps * n_comp),
        "module": np.tile(np.repeat(np.array(modules), 2), steps * n_comp * layers),
        "matrix": np.tile(np.array(["A", "B"]), n // 2),
        "norm": ab.reshape(-1).astype(np.float32),
        "rank": np.tile(np.repeat(np.asarray(ranks, dtype=np.int16), n_mod * 2), steps * n_comp),
        "scaling": np.tile(np.repeat(scaling, n_mod * 2), steps * n_comp),
        "reward": np.tile(np.repeat(np.array(list(profiles)), per), steps),
    }


def outcome_row(i: int, correct: bool, strategy: str) -> dict:
    """Question i's eval_outcomes.jsonl row (gold i, scoring any), with a reply that says so: the base model
    answers in prose ("The answer is 7."), a trained run in the study's format, except on every fifth
    question, where it answers untagged. So accuracy under scoring `tagged` is 0 for the base model and
    below `any` for trained runs, and the well-formed fraction is 0 and about 0.8."""
    answer = str(i) if correct else str(i + 1)
    tagged = strategy != "none" and i % 5 != 0
    reply = f"<think>add</think><answer>{answer}</answer>" if tagged else f"The answer is {answer}."
    return {"index": i, "id": f"q{i:04d}", "gold": str(i), "prediction": answer, "tagged": tagged, "parsed": True,
            "correct": correct, "reply": reply}


def uniform_train_importance(seed: int, steps: int, layers: int, modules: tuple[str, ...], r: int, extra: list,
                             **kw) -> np.ndarray:
    """S(l) of the training records the uniform job of this seed writes (write_job: its generator, its
    first draws), as the report reduces them: per step and layer the sum over modules of sqrt(A^2 + B^2)
    of the stored float32 norms, averaged over the steps."""
    rng = np.random.default_rng([seed, STRATEGIES.index("uniform"), *extra])
    cols = grad_columns("train", steps, [r] * layers, modules, rng, layer_profile(layers, seed), r0=r, **kw)
    ab = cols["norm"].astype(float).reshape(steps, layers, len(modules), 2)
    return np.sqrt((ab ** 2).sum(axis=-1)).sum(axis=-1).mean(axis=0)


def folder_name(layout: str, num: int, strategy: str, budget: str, seed: int, alpha_mode: str | None = None,
                algorithm: str | None = None, r: int | None = None) -> str:
    if layout == "numbered":
        return f"{num}_{strategy}_{budget}_s{seed}"
    # naming.job_dir_name: the swept keys, sorted
    swept = {"strategy": strategy, "seed": seed, "lora.alpha_mode": alpha_mode, "algorithm": algorithm, "lora.r": r}
    return "_".join(f"{k}-{v}" for k, v in sorted(swept.items()) if v is not None)


def overrides_of(strategy: str, seed: int, alpha_mode: str | None, algorithm: str | None = None,
                 r: int | None = None) -> list[str]:
    """The job's swept overrides (those not None), as Hydra writes them to .hydra/overrides.yaml."""
    return [f"strategy={strategy}", *([f"algorithm={algorithm}"] if algorithm else []),
            *([f"lora.r={r}"] if r is not None else []), *([f"lora.alpha_mode={alpha_mode}"] if alpha_mode else []),
            f"seed={seed}"]


@dataclass
class Spec:
    """What one synthetic job is; `swept` names the sweep's overrides among lora.alpha_mode, algorithm and
    lora.r; `algorithm` None writes a record without the algorithm key (one from before it existed)."""

    strategy: str
    seed: int
    steps: int
    layers: int
    modules: tuple[str, ...]
    n_questions: int
    profile_steps: int = 0
    status: str = "ok"
    alpha_mode: str = "per_rank"
    full_weight: bool = False
    noise: float = 0.3
    amplification: float = 0.0
    algorithm: str | None = None
    r: int = R
    swept: tuple[str, ...] = ()
    per_reward: bool = False
    # a proportional or shuffled job allocates from its same-seed uniform job's training S(l) (as a uniform
    # job that publishes its training as the profile; uniform_train_importance), not from the seed's
    # noise-free layer profile
    published: bool = False

    @property
    def extra(self) -> list[int]:
        """The generators of the sweeps the golden tables were made from, unchanged at lora.r 8 and no algorithm."""
        return ([self.r] if self.r != R else []) + (
            [list(ALGORITHMS).index(self.algorithm) + 1] if self.algorithm in ALGORITHMS else [])

    def label(self, key: str, value):
        return value if key in self.swept else None

    @property
    def arm(self) -> str:
        return (f"{self.strategy}-full" + (f"-{self.alpha_mode}" if "lora.alpha_mode" in self.swept else "")
                + (f"-{self.algorithm}" if "algorithm" in self.swept else "")
                + (f"-r{self.r}" if "lora.r" in self.swept else ""))


def write_job(job_dir: Path, strategy: str, seed: int, **kw) -> JobResult:
    """One job folder (Spec's fields as keywords); `status` failed writes a failed record without gradients
    or outcomes. The norms follow the module docstring. `per_reward` also writes reward_grads.parquet
    (reward_columns with reward_profiles, scale 1 + seed; the profile phase's, when there is one, with the
    profiles' layers reversed) and a residual train.reward_split_residual = 1e-7 (1 + seed); it draws no
    random numbers, so the rest is unchanged."""
    spec = Spec(strategy, seed, **kw)
    rng = np.random.default_rng([seed, STRATEGIES.index(strategy) if strategy in STRATEGIES else 9, *spec.extra])
    moving = adalora_ranks(spec.steps, spec.layers, len(spec.modules), spec.r, seed) if strategy == "adalora" else None
    result = _record(spec, moving)
    (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides_of(
        strategy, seed, spec.label("lora.alpha_mode", spec.alpha_mode), spec.label("algorithm", spec.algorithm),
        spec.label("lora.r", spec.r))))
    if spec.status != "ok":
        result.error = "RuntimeError: synthetic failure"
        write_result(job_dir, result)
        return result
    if result.allocation.ranks:
        _write_grads(job_dir, spec, result, rng, moving)
    _write_outcomes(job_dir, spec, result, rng)
    result.timings = {"total_s": 1.0}
    write_result(job_dir, result)
    return result


def _record(spec: Spec, moving: np.ndarray | None) -> JobResult:
    """The job record before training: identity, config, allocation and parameters."""
    bounds = Bounds(r_min=4, r_max=32, multiple=4)
    total = budget_total(spec.r, spec.layers, 1.0, bounds.multiple)
    importance = layer_profile(spec.layers, spec.seed).tolist() if spec.strategy in ("proportional", "shuffled") else None
    if spec.published and importance is not None:
        importance = uniform_train_importance(spec.seed, spec.steps, spec.layers, spec.modules, spec.r, spec.extra,
                                              alpha_mode=spec.alpha_mode, noise=spec.noise).tolist()
    if moving is not None:  # the final per-layer ranks; PEFT builds adalora's matrices at init_r
        ranks = [int(v) for v in np.rint(moving[-1].mean(axis=1))]
        n_params = (spec.r + spec.r // 2) * spec.layers * 1000
    else:
        ranks = allocate(spec.strategy, importance, total=total, bounds=bounds, num_layers=spec.layers,
                         seed=spec.seed, r=spec.r) or []
        n_params = sum(ranks) * 1000
    ident = JobIdentity(strategy=spec.strategy, budget="full", budget_fraction=1.0, seed=spec.seed, model=MODEL,
                        task=TASK, config_hash="synthetic", group=f"{MODEL}-{TASK}-{spec.arm}",
                        name=f"{spec.arm}-s{spec.seed}", run_id=f"{spec.arm}-{spec.seed}")
    config = {"model": {"name": MODEL}, "task": {"name": TASK}, "strategy": {"name": spec.strategy},
              "budget": {"name": "full", "fraction": 1.0}, "seed": spec.seed,
              **({"algorithm": {"name": spec.algorithm}} if spec.algorithm is not None else {}),
              "lora": {"r": spec.r, "alpha": ALPHA, "alpha_mode": spec.alpha_mode, "target_modules": list(spec.modules)},
              "profile": {"signal": "lora", "full_weight": spec.full_weight}, "grpo": {"steps": spec.steps},
              "tracking": {"project": "grpo-rank-synthetic", "entity": None, "mode": "auto"}}
    return JobResult(status=spec.status, job=ident, config=config,
                     allocation=Allocation(ranks=list(ranks), total=sum(ranks), budget_total=total if ranks else 0,
                                           r_min=bounds.r_min, r_max=bounds.r_max, multiple=bounds.multiple,
                                           num_layers=spec.layers, importance=importance),
                     params=Params(planned=n_params, built=n_params))


def _write_grads(job_dir: Path, spec: Spec, result: JobResult, rng: np.random.Generator,
                 moving: np.ndarray | None) -> None:
    """grad_norms.parquet (and reward_grads.parquet), drawing from `rng` in the golden sweeps' order."""
    ranks, layers, r = result.allocation.ranks, spec.layers, spec.r
    profile = layer_profile(layers, spec.seed)
    # W noise from its own generator, so the LoRA rows are the same with or without W rows
    index = STRATEGIES.index(spec.strategy) if spec.strategy in STRATEGIES else 9
    w_rng = np.random.default_rng([spec.seed, 100 + index])
    kw = dict(alpha_mode=spec.alpha_mode, noise=spec.noise, amplification=spec.amplification,
              full_weight=w_rng if spec.full_weight else None, r0=r)
    cols = grad_columns("train", spec.steps, ranks, spec.modules, rng, profile, **kw)
    if moving is not None:  # each module's rank at each step, in the rows' order: A and B rows, then W rows
        per_module = moving.reshape(-1)
        cols["rank"] = np.concatenate([np.repeat(per_module, 2), *([per_module] if spec.full_weight else [])])
    if spec.profile_steps:
        prof = grad_columns("profile", spec.profile_steps, [r] * layers, spec.modules, rng, profile, **kw)
        cols = {k: np.concatenate([prof[k], cols[k]]) for k in cols}
    write_grad_records(job_dir / GRADS, cols)
    result.train = TrainInfo(steps=spec.steps, nonzero_spread_fraction=float(rng.uniform(0.6, 1.0)),
                             importance=[0.0] * layers)
    if not spec.per_reward:
        return
    planted = reward_profiles(layers)
    parts = [reward_columns("train", spec.steps, ranks, spec.modules, planted, 1.0 + spec.seed,
                            alpha_mode=spec.alpha_mode, r0=r)]
    if spec.profile_steps:
        parts.insert(0, reward_columns("profile", spec.profile_steps, [r] * layers, spec.modules,
                                       {k: v[::-1] for k, v in planted.items()}, 1.0 + spec.seed,
                                       alpha_mode=spec.alpha_mode, r0=r))
    write_grad_records(job_dir / REWARD_GRADS,
                       {c: np.concatenate([p[c] for p in parts]) for c in REWARD_COLUMNS}, REWARD_COLUMNS)
    result.train.reward_split_residual = 1e-7 * (1 + spec.seed)


def _write_outcomes(job_dir: Path, spec: Spec, result: JobResult, rng: np.random.Generator) -> None:
    n = spec.n_questions
    # log2(8 / 8) = 0: the accuracy at lora.r 8 is the table's exactly
    p = min(0.95, max(0.05, ACCURACY.get(spec.strategy, 0.5) + 0.03 * math.log2(spec.r / R)))
    # the base model decodes greedily and trains nothing: the same answers under every seed
    draw = np.random.default_rng([0, 9, *spec.extra]) if spec.strategy == "none" else rng
    correct = draw.random(n) < p
    (job_dir / OUTCOMES).write_text("".join(json.dumps(outcome_row(i, bool(c), spec.strategy)) + "\n"
                                            for i, c in enumerate(correct.tolist())))
    k = int(correct.sum())
    lo, hi = wilson_interval(k, n)
    result.eval = EvalSummary(split="test", n=n, correct=k, accuracy=k / n, ci_low=lo, ci_high=hi,
                              parse_failures=0, parse_failure_rate=0.0)


def make_sweep(sweep: Path, jobs: int = 30, steps: int = 1000, layers: int = 30, modules: int = len(PROJECTIONS),
               n_questions: int = 200, layout: str = "numbered", profile_steps: int = 0,
               strategies: tuple[str, ...] = STRATEGIES, failed: tuple[int, ...] = (),
               unfinished: tuple[int, ...] = (), alpha_modes: tuple[str, ...] = ("per_rank",),
               full_weight: bool = False, noise: float = 0.3, amplification: float = 0.0,
               algorithms: tuple[str | None, ...] = (None,), lora_rs: tuple[int, ...] = (R,),
               per_reward: bool = False, published: bool = False) -> Path:
    """A sweep folder of `jobs` jobs; jobs numbered in `failed` fail, those in `unfinished` have a folder
    but no result.json (killed), and Hydra's multirun.yaml expects every strategy x algorithm x lora.r x
    alpha mode x seed. `per_reward`: every trained job also has reward_grads.parquet (write_job)."""
    sweep = Path(sweep)
    sweep.mkdir(parents=True, exist_ok=True)
    names = tuple(PROJECTIONS[:modules]) if modules <= len(PROJECTIONS) else tuple(
        list(PROJECTIONS) + [f"extra{i}_proj" for i in range(modules - len(PROJECTIONS))])
    # the swept axes, in the order of the overrides (Hydra's basic sweeper: the first outermost)
    axes = {"algorithm": algorithms, "lora.r": lora_rs, "lora.alpha_mode": alpha_modes}
    swept = tuple(k for k, values in axes.items() if len(values) > 1)
    combos = list(itertools.product(strategies, algorithms, lora_rs, alpha_modes))
    seeds = math.ceil(jobs / len(combos))
    subdir = ("${hydra.job.num}_${strategy.name}_${budget.name}_s${seed}" if layout == "numbered"
              else "${hydra.job.override_dirname}")
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({
        "hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                              "max_batch_size": None, "params": None},
                  "sweep": {"dir": str(sweep), "subdir": subdir},
                  "overrides": {"hydra": ["hydra.mode=MULTIRUN"],
                                "task": [f"strategy={','.join(strategies)}",
                                         *[f"{k}={','.join(str(v) for v in axes[k])}" for k in swept],
                                         f"seed={','.join(str(s) for s in range(seeds))}"]}},
        "model": {"name": MODEL}, "task": {"name": TASK}, "strategy": {"name": strategies[0]},
        "budget": {"name": "full", "fraction": 1.0}, "seed": 0,
        **({"algorithm": {"name": algorithms[0]}} if algorithms[0] is not None else {}),
        "lora": {"r": lora_rs[0], "alpha": ALPHA, "alpha_mode": alpha_modes[0]}}))
    for num in range(jobs):
        (strategy, algorithm, r, mode), seed = combos[num // seeds], num % seeds
        labels = dict(alpha_mode=mode if "lora.alpha_mode" in swept else None,
                      algorithm=algorithm if "algorithm" in swept else None, r=r if "lora.r" in swept else None)
        job_dir = sweep / folder_name(layout, num, strategy, "full", seed, **labels)
        if num in unfinished:
            (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
            (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides_of(strategy, seed, **labels)))
            continue
        write_job(job_dir, strategy, seed, steps=steps, layers=layers, modules=names, n_questions=n_questions,
                  profile_steps=profile_steps if strategy == "proportional" else 0,
                  status="failed" if num in failed else "ok", alpha_mode=mode, full_weight=full_weight, noise=noise,
                  amplification=amplification, algorithm=algorithm, r=r, swept=swept, per_reward=per_reward,
                  published=published)
    return sweep


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--jobs", type=int, default=30)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--modules", type=int, default=len(PROJECTIONS))
    p.add_argument("--questions", type=int, default=200)
    p.add_argument("--layout", choices=("numbered", "overrides"), default="numbered")
    p.add_argument("--profile-steps", type=int, default=0)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    p.add_argument("--alpha-modes", nargs="+", default=["per_rank"], help="fixed, rslora, per_rank")
    p.add_argument("--full-weight", action="store_true", help="also W rows (||dL/dW||, no scaling)")
    p.add_argument("--noise", type=float, default=0.3, help="lognormal sigma of the per-step norm noise")
    p.add_argument("--amplification", type=float, default=0.0, help="rank slope planted beyond the scaling")
    p.add_argument("--algorithms", nargs="+", default=None,
                   help="algorithm.name values (grpo_rank.objective.algorithms); default: records without the key")
    p.add_argument("--lora-r", nargs="+", type=int, default=[R], help="lora.r values (a capacity curve)")
    p.add_argument("--per-reward", action="store_true", help="also reward_grads.parquet (reward_profiles)")
    a = p.parse_args(argv)
    make_sweep(a.out, a.jobs, a.steps, a.layers, a.modules, a.questions, a.layout, a.profile_steps,
               tuple(a.strategies), alpha_modes=tuple(a.alpha_modes), full_weight=a.full_weight, noise=a.noise,
               amplification=a.amplification, algorithms=tuple(a.algorithms or [None]), lora_rs=tuple(a.lora_r),
               per_reward=a.per_reward)
    print(a.out)


if __name__ == "__main__":
    main()
