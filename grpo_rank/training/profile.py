"""The profile stage: the importance S(l) a gradient-aware allocation needs, with where it came from.

Either a GRPO phase at uniform rank on the same model, task and seed (shared through the profile
cache, profile_cache.py), or the recorded gradients of a finished job (`profile.from_run=<job dir>`).
S(l) is the study's Eq. 2 on the chosen signal (`profile.signal`, importance.layer_importance).

The study allocated from its full-length uniform run. When the profile settings equal a uniform job's
(`profile.steps == grpo.steps`, everything else the same, so the profile key is the same), that uniform
job's training *is* the profile: `train_publishing` trains it under the cache's lock and publishes its
records, and a proportional job of the same seed waits on the lock and reads them (or computes them
itself when it gets there first). No full-length run is done twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grpo_rank.allocation.allocate import Bounds, allocate
from grpo_rank.allocation.importance import layer_importance
from grpo_rank.config.schema import RunConfig
from grpo_rank.profiling.cache import Profile, ProfileCache, from_run, profile_key
from grpo_rank.record.files import TRAIN_LOG, replace_phase_rows
from grpo_rank.record.result import ProfileInfo
from grpo_rank.runtime import distributed
from grpo_rank.training.train import train

log = logging.getLogger(__name__)


@dataclass
class ProfileOutcome:
    importance: list[float]  # S(l) per layer
    info: ProfileInfo
    grads: dict[str, np.ndarray] = field(default_factory=dict)  # phase "profile" records, for the job's own file
    base_touched: bool = False  # the model passed in was trained: reload a clean base before the next phase
    reward_grads: dict[str, np.ndarray] | None = None  # profile.per_reward, when this job computed the profile


def uniform_ranks(cfg: RunConfig, num_layers: int) -> list[int]:
    bounds = Bounds(cfg.lora.r_min, cfg.lora.r_max, cfg.lora.multiple)
    return allocate("uniform", total=cfg.lora.r * num_layers, bounds=bounds, num_layers=num_layers, r=cfg.lora.r)


def profile(cfg: RunConfig, model, tokenizer, train_set, num_layers: int, job_dir: Path, *,
            on_step: Callable | None = None, on_log: Callable | None = None) -> ProfileOutcome:
    """S(l) from `profile.from_run`, else from the profile cache (computing it on a miss)."""
    if cfg.profile.from_run:
        importance, info = from_run(cfg.profile.from_run, num_layers, cfg.profile.signal)
        return ProfileOutcome(importance, info)
    ranks = uniform_ranks(cfg, num_layers)
    key = profile_key(cfg, ranks, cfg.profile.steps)
    computed = []

    def compute(work_dir: Path) -> Profile:
        log.info("profiling: %d GRPO steps at uniform rank %d", cfg.profile.steps, cfg.lora.r)
        out = train(model, tokenizer, train_set, ranks, cfg, phase="profile", steps=cfg.profile.steps,
                    job_dir=job_dir, output_dir=work_dir, on_step=on_step, on_log=on_log)
        computed.append(out)
        return Profile(out.grads, out.log_rows, {
            "steps": cfg.profile.steps, "nonzero_spread_fraction": out.nonzero_spread_fraction,
            "computed_by": str(job_dir.resolve()), "resumed_from_step": out.resumed_from})

    cache = ProfileCache(cfg.profile.cache_dir)
    prof, source = cache.get_or_compute(key, compute)
    # the job's log holds its profile either way, so a job folder reads the same from either source
    if distributed.is_main():
        replace_phase_rows(job_dir / TRAIN_LOG, "profile", prof.log_rows)
    info = _info(cfg, source, cache, key, prof)
    return ProfileOutcome(layer_importance(prof.grads, "profile", signal=cfg.profile.signal).tolist(), info,
                          prof.grads, base_touched=source == "profiled",
                          reward_grads=computed[0].reward_grads if computed else None)


def _info(cfg: RunConfig, source: str, cache: ProfileCache, key: str, prof: Profile) -> ProfileInfo:
    return ProfileInfo(source=source, steps=int(prof.meta.get("steps", cfg.profile.steps)), phase="profile",
                       path=str(cache.entry(key).resolve()), key=key, sha256=prof.sha256,
                       computed_by=prof.meta.get("computed_by"), resumed_from_step=prof.meta.get("resumed_from_step"),
                       nonzero_spread_fraction=prof.meta.get("nonzero_spread_fraction"), signal=cfg.profile.signal)


def publishes(cfg: RunConfig, ranks: list[int] | None, num_layers: int) -> bool:
    """Whether this job's training is exactly the profile a gradient-aware job of its settings computes:
    uniform ranks, as many steps as the profile, no profile read from elsewhere."""
    return (cfg.strategy.name == "uniform" and not cfg.profile.from_run and cfg.profile.steps == cfg.grpo.steps
            and ranks == uniform_ranks(cfg, num_layers))


def _as_profile(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**columns, "phase": np.full(len(columns["phase"]), "profile")}


def train_publishing(cfg: RunConfig, model, tokenizer, train_set, ranks: list[int], job_dir: Path, *,
                     on_step: Callable | None = None, on_log: Callable | None = None,
                     on_completions: Callable | None = None):
    """A uniform job's training that is also the profile (`publishes`): under the cache's lock, trained
    once and stored as the profile entry. Returns (TrainOutcome, ProfileInfo); when the entry already
    exists (a proportional job profiled first) the job trains as usual and the info says "cache"."""
    key = profile_key(cfg, ranks, cfg.grpo.steps)
    cache = ProfileCache(cfg.profile.cache_dir)
    trained = []

    def compute(work_dir: Path) -> Profile:
        log.info("training at uniform rank %d for %d steps; the records are published as the profile",
                 cfg.lora.r, cfg.grpo.steps)
        # checkpoints stay in the job folder (trainer_train): a killed uniform job resumes its own run
        out = train(model, tokenizer, train_set, ranks, cfg, phase="train", steps=cfg.grpo.steps,
                    job_dir=job_dir, on_step=on_step, on_log=on_log, on_completions=on_completions)
        trained.append(out)
        return Profile(_as_profile(out.grads), [{**r, "phase": "profile"} for r in out.log_rows], {
            "steps": cfg.grpo.steps, "nonzero_spread_fraction": out.nonzero_spread_fraction,
            "computed_by": str(job_dir.resolve()), "resumed_from_step": out.resumed_from,
            "published_by": "uniform"})

    prof, source = cache.get_or_compute(key, compute)
    if not trained:  # the entry was there already: this job still trains its own model
        trained.append(train(model, tokenizer, train_set, ranks, cfg, phase="train", steps=cfg.grpo.steps,
                             job_dir=job_dir, on_step=on_step, on_log=on_log, on_completions=on_completions))
    return trained[0], _info(cfg, "published" if source == "profiled" else source, cache, key, prof)
