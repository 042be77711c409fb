"""The rules of a composed RunConfig: every field's own rule (fields.broken_fields), then the rules between
fields, all before any model or data loads (pipeline/preflight.py checks files, folders and budgets next).
Each failure is a ConfigError: one line naming the field and the fix.

    from grpo_rank.config.validate import validate
    validate(to_typed(cfg))
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from grpo_rank.allocation.allocate import STRATEGIES
from grpo_rank.allocation.sites import ALL_LINEAR, LAYER_PATTERN
from grpo_rank.config.fields import ConfigError, broken_fields
from grpo_rank.config.fields import fail as _fail
from grpo_rank.config.model import check_model
from grpo_rank.config.schema import HUB_REPO_RE, LoraSettings, RunConfig
from grpo_rank.data import hf_task
from grpo_rank.data.tasks import TASKS
from grpo_rank.errors import InputError
from grpo_rank.objective import symbolic, user_rewards
from grpo_rank.objective.algorithms import ALGORITHMS


def validate(cfg: RunConfig) -> None:
    """Every field's own rule, then the rules between fields; before any model or data loads.
    Raises ConfigError (an InputError): one line naming the field and the fix."""
    for name, value, problem, fix in broken_fields(cfg):
        _fail(name, value, problem, fix)
    t, lo, g = cfg.task, cfg.lora, cfg.grpo
    check_model(cfg.model)
    if t.name == "gsm8k" and not (t.path or t.hub_id):
        _fail("task.path", None, "gsm8k needs local files or a hub id", "set task.path=<dir with test.jsonl>")
    for name, value, problem, fix in hf_task.config_problems(t) if t.name == "hf" else ():
        _fail(name, value, problem, fix)
    if cfg.eval.scoring == "math_verify" and symbolic.missing():
        _fail("eval.scoring", "math_verify", "needs the math-verify package, which is not installed",
              "pip install -e '.[math]' (or pip install 'math-verify[antlr4_9_3]')")
    splits = TASKS[t.name].splits
    if cfg.eval.split not in splits:
        _fail("eval.split", cfg.eval.split, f"task {t.name} has no such split", f"use one of {', '.join(splits)}")
    if lo.r_max < lo.r_min:
        _fail("lora.r_max", lo.r_max, f"must be >= lora.r_min={lo.r_min}", f"e.g. lora.r_max={max(64, lo.r_min)}")
    for name, bound in (("lora.r_min", lo.r_min), ("lora.r_max", lo.r_max)):
        if bound % lo.multiple:
            _fail(name, bound, f"must be a multiple of lora.multiple={lo.multiple}",
                  f"e.g. {name}={max(lo.multiple, bound - bound % lo.multiple)}")
    check_targets(lo)
    processes = cfg.distributed.processes
    batch = g.per_device_batch_size * g.grad_accum * processes  # what TRL samples per generation round
    if batch % g.num_generations:
        _fail("grpo.per_device_batch_size", g.per_device_batch_size,
              f"the batch per_device_batch_size*grad_accum*distributed.processes={batch} must be divisible "
              f"by grpo.num_generations={g.num_generations}",
              f"set grpo.per_device_batch_size to a multiple of {g.num_generations}")
    if processes > 1 and cfg.profile.per_reward:
        _fail("profile.per_reward", True, "the per-reward split is computed from one process's micro-batches",
              "use distributed.processes=1 for it, or profile.per_reward=false")
    check_rewards(g.rewards, g.reward_modules, cfg.profile.per_reward)
    if cfg.hub.repo is not None and not HUB_REPO_RE.match(cfg.hub.repo):
        _fail("hub.repo", cfg.hub.repo, "not a Hugging Face repo id", "use name or namespace/name (letters, digits, "
              "-, _, .), or hub.repo=null for one derived from the job")
    if STRATEGIES[cfg.strategy.name].adaptive:
        check_adalora(cfg)
    if cfg.profile.per_reward and ALGORITHMS[cfg.algorithm.name].trainer != "grpo":
        _fail("profile.per_reward", True, f"the per-reward split is defined on GRPO's group-normalised "
              f"advantages, which algorithm={cfg.algorithm.name} does not train with",
              "use algorithm=grpo/dapo/dr_grpo/bnpo, or profile.per_reward=false")
    check_per_reward(cfg, vllm=g.use_vllm is True)  # auto (null) is checked again once resolved (job.runtime_info)
    if cfg.eval.backend == "vllm":
        check_vllm_eval(cfg)
    needs_profile = STRATEGIES[cfg.strategy.name].needs_profile
    if cfg.profile.signal == "full_weight" and not cfg.profile.full_weight:
        _fail("profile.full_weight", False, "profile.signal=full_weight allocates from the recorded full-weight "
              "gradients", "set profile.full_weight=true (or profile.signal=lora)")
    if needs_profile and cfg.profile.from_run is None and cfg.profile.steps < 1:
        _fail("profile.steps", cfg.profile.steps, f"strategy={cfg.strategy.name} needs a profile",
              "set profile.steps>=1 or profile.from_run=<job dir>")
    if needs_profile and cfg.dry_run and cfg.profile.from_run is None:
        _fail("profile.from_run", None, f"dry_run trains nothing, so it cannot profile for strategy={cfg.strategy.name}",
              "pass profile.from_run=<a finished job dir> or use strategy=uniform/random")


def check_per_reward(cfg: RunConfig, vllm: bool) -> None:
    """The per-reward split is exact only where the loss is linear in the advantages (reward_split.py).
    With vLLM generation TRL corrects by the ratio to log-probs taken at generation time; with LoRA dropout
    those were taken under other masks than the step's, so the clip can bind, and where it binds the loss
    depends on the sign of the whole advantage, not on the sum of its shares."""
    if cfg.profile.per_reward and vllm and cfg.lora.dropout > 0:
        _fail("profile.per_reward", True, f"with vLLM generation and lora.dropout={cfg.lora.dropout} TRL's clipped "
              "importance ratio makes the loss non-linear in the advantages, so the split cannot be exact",
              "set lora.dropout=0, or grpo.use_vllm=false, or profile.per_reward=false")


def check_vllm_eval(cfg: RunConfig) -> None:
    """What vLLM cannot evaluate, whatever the machine (preflight checks the GPU and the package)."""
    if cfg.model.source == "tiny":
        _fail("eval.backend", "vllm", "vLLM loads a model from a folder and the tiny model is built in-process",
              "use eval.backend=hf with model=tiny")
    if STRATEGIES[cfg.strategy.name].adaptive:
        _fail("eval.backend", "vllm", f"strategy={cfg.strategy.name} trains an AdaLoRA adapter, which vLLM "
              "does not load", "use eval.backend=hf")


MODULE_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")


def check_targets(lo: LoraSettings) -> None:
    names = lo.target_modules
    if not names:
        _fail("lora.target_modules", names, "is empty", "list at least one module name, e.g. [q_proj], or [all-linear]")
    if ALL_LINEAR in names and len(names) > 1:
        _fail("lora.target_modules", names, f"{ALL_LINEAR} already takes every linear layer", f"use [{ALL_LINEAR}] alone")
    bad = [x for x in names if x != ALL_LINEAR and not MODULE_NAME.fullmatch(x)]
    if bad:
        _fail("lora.target_modules", bad, "not a module name or dotted path tail",
              "use names such as q_proj or attn.c_proj (letters, digits, _ and dots), or [all-linear]")
    if len(set(names)) != len(names):
        _fail("lora.target_modules", names, "names a projection twice", "list each once")
    try:
        groups = re.compile(lo.layer_pattern).groups
    except re.error as exc:
        _fail("lora.layer_pattern", lo.layer_pattern, f"not a regular expression ({exc})",
              f"e.g. lora.layer_pattern='{LAYER_PATTERN}'")
    if groups < 1:
        _fail("lora.layer_pattern", lo.layer_pattern, "has no group to read the layer number from",
              r"put the number in the first group, e.g. '(?:^|\.)layers\.(\d+)\.'")


def check_adalora(cfg: RunConfig) -> None:
    a, lo = cfg.adalora, cfg.lora
    if lo.alpha_mode != "fixed":
        _fail("lora.alpha_mode", lo.alpha_mode, "strategy=adalora scales every module by alpha/adalora.init_r "
              "(PEFT's AdaLoRA), whatever its current rank", "use lora.alpha_mode=fixed")
    if a.warmup_fraction + a.final_fraction >= 1:
        _fail("adalora.final_fraction", a.final_fraction, f"with adalora.warmup_fraction={a.warmup_fraction} no "
              "step is left for re-allocation", "keep warmup_fraction + final_fraction < 1, e.g. 0.1 and 0.2")
    if cfg.grpo.steps - int(a.final_fraction * cfg.grpo.steps) < 2:
        # PEFT scores the triplets on the steps before the final mask; with none, it has nothing to rank by
        _fail("grpo.steps", cfg.grpo.steps, "strategy=adalora needs a step that scores importance before its "
              "final allocation", "set grpo.steps>=2 (and a smaller adalora.final_fraction)")
    init_r = a.init_r or math.ceil(1.5 * lo.r)
    per_module = lo.r * cfg.budget.fraction  # the budget's mean rank per module (preflight checks the rounded total)
    if init_r <= per_module:
        # PEFT masks the starting total down to the budget; a start at or below it leaves nothing to mask
        _fail("adalora.init_r", a.init_r, f"AdaLoRA masks ranks away from its start, which must exceed the budget "
              f"it ends on (lora.r={lo.r} x budget.fraction={cfg.budget.fraction:g} per module)",
              f"e.g. adalora.init_r={max(math.ceil(1.5 * lo.r), math.floor(per_module) + 1)}")


def check_rewards(rewards: Mapping[str, float], modules: list[str] | None = None, per_reward: bool = False) -> None:
    if not rewards:
        _fail("grpo.rewards", dict(rewards), "no reward chosen",
              "pick a set with rewards=partial or rewards=binary, or add one: +grpo.rewards.correctness=1.0")
    try:
        user_rewards.registry(rewards, modules or [], per_reward)  # imports the modules
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    for name, weight in rewards.items():
        if not (math.isfinite(weight) and weight > 0):
            _fail(f"grpo.rewards.{name}", weight, "a weight must be a finite number > 0",
                  f"to turn the reward off, drop it: ~grpo.rewards.{name}")
