"""Typed configuration: the dataclass schemas behind every YAML in conf/.

`conf/config.yaml` starts from the `grpo_rank_schema` node registered here, so every group file
(model/, task/, strategy/, budget/, algorithm/, rewards/, experiment/) is merged into a closed, typed structure:
a misspelt key or a wrong type fails at compose time. `to_typed` converts the composed DictConfig to
these dataclasses once, at the entry point; nothing below it sees a DictConfig. `validate` then checks
every value, before any model or data loads (preflight.py checks files, folders and budgets next).

Every leaf field is declared with `setting(default, affects, valid=...)` (fields.py): `affects` says
once which results it changes (`JOB_AND_PROFILE`, `JOB_ONLY`, `NO_RESULT`), and `result_payload(cfg,
"job" | "profile")` keeps exactly those, for the run identity and the profile cache key; `valid` is
its own rule: a numeric range, or the keys of the registry the value picks from (allocate.STRATEGIES,
algorithms.ALGORITHMS, tasks.TASKS, hf_task.EXTRACTORS, models.LOADERS) or a dict of choices in this module.
Rules between fields are `validate`'s (reward names: user_rewards.registry, which imports grpo.reward_modules).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from grpo_rank.allocation.allocate import STRATEGIES
from grpo_rank.allocation.importance import ALPHA_MODES, SIGNALS
from grpo_rank.config.fields import (
    JOB_ONLY,
    NO_RESULT,
    NonEmpty,
    OneOf,
    Range,
    above,
    at_least,
    broken_fields,
    payload,
    setting,
)
from grpo_rank.data import hf_task
from grpo_rank.data.models import LOADERS
from grpo_rank.data.tasks import TASKS
from grpo_rank.errors import InputError
from grpo_rank.objective import symbolic, user_rewards
from grpo_rank.objective.algorithms import ALGORITHMS
from grpo_rank.objective.answers import SCORING

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ConfigError(InputError):
    """A bad setting, reported in one line that names the field and the fix."""

    kind = "config error"


# Closed choices that have no registry of their own elsewhere: value -> what it means.
TINY_ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
DTYPES = {"auto": "bf16 on a GPU that supports it, else fp32", "float32": "fp32", "bfloat16": "bf16",
          "float16": "fp16"}
VLLM_MODES = {"colocate": "vLLM in the training process", "server": "a separate trl vllm-serve"}  # TRL's vllm_mode
TRACKING_MODES = {"auto": "online when an API key is found, else offline", "online": "W&B server",
                  "offline": "files under the job folder", "disabled": "no W&B"}


NAME = NonEmpty()
COUNT = at_least(1)


@dataclass
class TinyModelConfig:
    # 12+ layers so that layer 1 and layers 10-19 coexist: the PEFT regex-key collision needs both.
    arch: str = setting("llama", valid=OneOf(TINY_ARCHS, "architecture"))
    num_layers: int = setting(12, valid=COUNT)
    hidden_size: int = setting(64, valid=COUNT)
    intermediate_size: int = setting(128, valid=COUNT)
    num_heads: int = setting(4, valid=COUNT)
    num_kv_heads: int = setting(2, valid=COUNT)
    # size of the BPE tokenizer trained in-process; the 256 bytes and 3 special tokens come first
    vocab_size: int = setting(512, valid=at_least(259))


@dataclass
class ModelConfig:
    name: str = setting(MISSING, valid=NAME)
    source: str = setting(MISSING, valid=OneOf(lambda: list(LOADERS), "model source"))
    # hub id or local folder (source=hub); folder override for the GGUF (source=gguf_package)
    path: str | None = setting(None)
    gguf_package: str | None = setting(None)  # a pip package whose folder holds gguf_file
    gguf_file: str | None = setting(None)
    dtype: str = setting("auto", valid=OneOf(DTYPES, "dtype"))
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class TaskConfig:
    name: str = setting(MISSING, valid=OneOf(TASKS, "task"))
    hub_id: str | None = setting(None)
    hub_config: str | None = setting(None)
    # gsm8k: folder with train.jsonl/test.jsonl; hf: see hf_task.py (a folder or a {split} pattern); wins over hub_id
    path: str | None = setting(None)
    # task=hf only (hf_task.py): the columns, how the gold answer is taken from the answer one, the splits' names
    prompt_column: str | None = setting(None, omit_at=None)
    answer_column: str | None = setting(None, omit_at=None)
    answer_extractor: str | None = setting(None, valid=OneOf(hf_task.EXTRACTORS, "answer extractor", optional=True),
                                           omit_at=None)
    train_split: str = setting("train", valid=NAME, omit_at="train")
    test_split: str = setting("test", valid=NAME, omit_at="test")
    # a Jinja chat template, or the path of a file holding one, in place of the tokenizer's (any task)
    chat_template: str | None = setting(None, omit_at=None)
    train_size: int | None = setting(None, valid=COUNT)  # None: all of the split
    # arithmetic task only: difficulty knobs
    max_operand: int = setting(20, valid=at_least(2))
    max_ops: int = setting(1, valid=COUNT)  # 2: half the problems take two steps
    system_prompt: str = setting(
        "Think briefly, then give only the final number. Reply exactly in this format: "
        "<think>your reasoning</think><answer>the number</answer>"
    )
    # one worked example of the answer format before each question (tasks.SHOT), in training and evaluation:
    # a 135M model needs it to emit the tags at all; the study's prompts have none (experiment=paper)
    few_shot: bool = setting(True)


@dataclass
class StrategyConfig:
    name: str = setting(MISSING, JOB_ONLY, valid=OneOf(STRATEGIES, "strategy"))


@dataclass
class AlgorithmConfig:
    # the training objective (algorithms.ALGORITHMS): the GRPO loss variants, rloo, or sft on gold solutions
    name: str = setting(MISSING, valid=OneOf(ALGORITHMS, "algorithm"))


@dataclass
class BudgetConfig:
    name: str = setting(MISSING, JOB_ONLY, valid=NAME)
    # of the uniform total rank, r * num_layers; preflight checks it fits [r_min, r_max] on every layer
    fraction: float = setting(1.0, JOB_ONLY, valid=above(0))


@dataclass
class LoraSettings:
    r: int = setting(8, valid=COUNT)  # the uniform rank; the budget is r * num_layers * budget.fraction
    alpha: float = setting(16.0, valid=above(0))
    dropout: float = setting(0.0, valid=Range(0, 1, hi_open=True))
    target_modules: list[str] = setting(factory=lambda: list(ALL_PROJECTIONS))
    # the allocation bounds reach a profile only through its ranks
    r_min: int = setting(4, JOB_ONLY, valid=COUNT)
    r_max: int = setting(64, JOB_ONLY, valid=COUNT)
    multiple: int = setting(4, JOB_ONLY, valid=COUNT)
    # The scaling artefact's control: with fixed alpha, ||grad B|| ~ alpha/sqrt(r) at init, so moving rank
    # alone moves gradient norms down; rslora (alpha/sqrt(r)) is neutral; per_rank (the uniform run's
    # alpha/lora.r everywhere) moves them up as sqrt(r). ALPHA_MODES says each one's scaling.
    alpha_mode: str = setting("fixed", valid=OneOf(ALPHA_MODES, "alpha mode"))


@dataclass
class AdaLoraSettings:
    # strategy=adalora only (adalora.py); the budget it ends on is the arm's, as for every strategy.
    # None: 3/2 of lora.r rounded up (PEFT's default ratio, init_r 12 for target_r 8)
    init_r: int | None = setting(None, JOB_ONLY, valid=COUNT)
    # the first floor(f * steps) steps train at init_r; the last floor(f * steps) at the final ranks
    warmup_fraction: float = setting(0.1, JOB_ONLY, valid=Range(0, 1, hi_open=True))
    final_fraction: float = setting(0.2, JOB_ONLY, valid=Range(0, 1, hi_open=True))
    delta_t: int = setting(1, JOB_ONLY, valid=COUNT)  # steps between two re-allocations
    beta1: float = setting(0.85, JOB_ONLY, valid=Range(0, 1, lo_open=True, hi_open=True))  # importance EMA
    beta2: float = setting(0.85, JOB_ONLY, valid=Range(0, 1, lo_open=True, hi_open=True))  # uncertainty EMA
    orth_reg_weight: float = setting(0.5, JOB_ONLY, valid=at_least(0))


@dataclass
class GRPOSettings:
    steps: int = setting(4, JOB_ONLY, valid=COUNT)  # the profile has its own, profile.steps
    num_generations: int = setting(4, valid=at_least(2))  # GRPO compares >= 2 completions per prompt
    per_device_batch_size: int = setting(8, valid=COUNT)  # completions per micro-batch
    grad_accum: int = setting(1, valid=COUNT)
    beta: float = setting(0.05, valid=at_least(0))
    learning_rate: float = setting(5e-5, valid=above(0))
    max_completion_length: int = setting(48, valid=COUNT)
    max_grad_norm: float = setting(1.0, valid=at_least(0))
    temperature: float = setting(1.0, valid=above(0))
    # reward name (rewards.REWARDS, or a function of grpo.reward_modules) -> weight; the set comes from the
    # `rewards` group (rewards=partial)
    rewards: dict[str, float] = setting(factory=dict)
    # modules of the user's reward functions (user_rewards.py); their sources' hashes join the run identity
    reward_modules: list[str] = setting(factory=list, omit_at=[])
    use_vllm: bool | None = setting(None)  # None: only when a GPU and vllm are both present
    vllm_mode: str = setting("colocate", valid=OneOf(VLLM_MODES, "vLLM mode"))
    gradient_checkpointing: bool = setting(False)
    logging_steps: int = setting(1, JOB_ONLY, valid=COUNT)
    # a checkpoint (adapter, optimizer, scheduler, RNG, gradient records) every N optimizer steps, so a
    # killed or preempted job resumes instead of restarting; 0 saves none. Resuming changes no result.
    save_steps: int = setting(25, NO_RESULT, valid=at_least(0))


@dataclass
class ProfileSettings:
    # uniform-rank GRPO steps whose gradients define the importance S(l)
    steps: int = setting(3, JOB_ONLY, valid=at_least(0))
    # a finished job folder whose recorded gradients serve as the importance profile
    from_run: str | None = setting(None, JOB_ONLY)
    # computed profiles, shared by every job (and Slurm node) that needs the same one; a relative path
    # is taken from the directory the sweep was launched in
    cache_dir: str = setting("multirun/.profiles", NO_RESULT, valid=NAME)
    # what S(l) is computed on (importance.SIGNALS): the LoRA gradients (the study's Eq. 2) or the
    # gradients of the frozen weights under them, which no LoRA rank or alpha moves
    signal: str = setting("lora", JOB_ONLY, valid=OneOf(lambda: list(SIGNALS), "importance signal"))
    # record ||dL/dW|| of every targeted frozen weight beside the LoRA norms, in every phase (the report's
    # rank-invariant view of the shift); profile.signal=full_weight needs it
    full_weight: bool = setting(True)
    # record each reward's share of the gradient (and the KL term's) per step in reward_grads.parquet, in every
    # phase the job trains (reward_split.py); costs one more forward and backward per reward and micro-batch
    per_reward: bool = setting(False)


@dataclass
class EvalSettings:
    split: str = setting("test", JOB_ONLY)  # one of the task's splits (tasks.TASKS[...].splits)
    n: int | None = setting(32, JOB_ONLY, valid=COUNT)  # None: the whole split
    batch_size: int = setting(32, JOB_ONLY, valid=COUNT)
    max_new_tokens: int = setting(64, JOB_ONLY, valid=COUNT)
    # what counts as correct (answers.SCORING): `tagged` is the study's correctness reward; `any` also
    # takes an untagged final number (the demo); `math_verify`, any math answer (symbolic.py)
    scoring: str = setting("any", JOB_ONLY, valid=OneOf(lambda: list(SCORING), "scoring"))


@dataclass
class TrackingSettings:
    project: str = setting("grpo-rank", NO_RESULT, valid=NAME)
    entity: str | None = setting(None, NO_RESULT)
    mode: str = setting("auto", NO_RESULT, valid=OneOf(TRACKING_MODES, "tracking mode"))


@dataclass
class DistributedSettings:
    # processes of one job on this node, data parallel (distributed.py): one per GPU, or CPU processes (gloo).
    # Left out of the run identity at 1, so that jobs recorded before the setting existed keep theirs
    processes: int = setting(1, valid=COUNT, omit_at=1)


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    strategy: StrategyConfig = MISSING
    budget: BudgetConfig = MISSING
    algorithm: AlgorithmConfig = MISSING
    seed: int = setting(0, valid=Range(0, 2**32 - 1))  # numpy's seeding takes [0, 2**32)
    dry_run: bool = setting(False, NO_RESULT)
    lora: LoraSettings = field(default_factory=LoraSettings)
    adalora: AdaLoraSettings = field(default_factory=AdaLoraSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    profile: ProfileSettings = field(default_factory=ProfileSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    distributed: DistributedSettings = field(default_factory=DistributedSettings)
    # rerun a job even when its folder already holds a finished result of this config
    force: bool = setting(False, NO_RESULT)
    # torch CPU threads of this job; None: its share of the cores, from the launcher (threads.py)
    threads: int | None = setting(None, NO_RESULT, valid=COUNT)
    # where converted model weights are cached between runs
    cache_dir: str = setting("${oc.env:GRPO_RANK_CACHE,${oc.env:HOME}/.cache/grpo_rank}", NO_RESULT, valid=NAME)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="grpo_rank_schema", node=RunConfig)


register_configs()


def result_payload(cfg: RunConfig, scope: str) -> dict:
    """The settings that change a result, nested like the config: scope "job" (the run identity: skip,
    resume and the W&B group hash it) or "profile" (a uniform-rank profiling phase's gradients; the
    profile key adds the ranks and steps). A part none of whose fields count is left out."""
    return payload(cfg, scope)


def to_typed(cfg: DictConfig) -> RunConfig:
    """The composed config as RunConfig; ConfigError for a value left missing (???) or unresolvable."""
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"{key}: {reason}; set {key}=<value> (or pick a config group option)") from None


def _fail(field_name: str, value, problem: str, fix: str) -> None:
    raise ConfigError(f"{field_name}={value!r}: {problem}; {fix}")


def validate(cfg: RunConfig) -> None:
    """Every field's own rule, then the rules between fields; before any model or data loads.
    Raises ConfigError (an InputError): one line naming the field and the fix."""
    for name, value, problem, fix in broken_fields(cfg):
        _fail(name, value, problem, fix)
    m, t, lo, g = cfg.model, cfg.task, cfg.lora, cfg.grpo
    if m.source == "hub" and not m.path:
        _fail("model.path", m.path, "a hub model needs a hub id or local folder", "set model.path=<id or dir>")
    if m.source == "gguf_package" and not m.gguf_file:
        _fail("model.gguf_file", m.gguf_file, "a GGUF model needs its file name", "set model.gguf_file=<name>.gguf")
    if m.source == "gguf_package" and not (m.gguf_package or m.path):
        _fail("model.gguf_package", m.gguf_package, "a GGUF model needs the package or folder that holds it",
              "set model.gguf_package=<pip package> or model.path=<folder>")
    if m.source == "tiny":
        tiny = m.tiny
        if tiny.hidden_size % tiny.num_heads:
            _fail("model.tiny.num_heads", tiny.num_heads, f"must divide model.tiny.hidden_size={tiny.hidden_size}",
                  "e.g. model.tiny.num_heads=4")
        if tiny.num_heads % tiny.num_kv_heads:
            _fail("model.tiny.num_kv_heads", tiny.num_kv_heads, f"must divide model.tiny.num_heads={tiny.num_heads}",
                  "e.g. model.tiny.num_kv_heads=2")
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
    if not lo.target_modules:
        _fail("lora.target_modules", lo.target_modules, "is empty", "list at least one projection, e.g. [q_proj]")
    unknown = [x for x in lo.target_modules if x not in ALL_PROJECTIONS]
    if unknown:
        _fail("lora.target_modules", unknown, "unknown projection", f"use names from {ALL_PROJECTIONS}")
    if len(set(lo.target_modules)) != len(lo.target_modules):
        _fail("lora.target_modules", lo.target_modules, "names a projection twice", "list each once")
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
    if STRATEGIES[cfg.strategy.name].adaptive:
        check_adalora(cfg)
    if cfg.profile.per_reward and ALGORITHMS[cfg.algorithm.name].trainer != "grpo":
        _fail("profile.per_reward", True, f"the per-reward split is defined on GRPO's group-normalised "
              f"advantages, which algorithm={cfg.algorithm.name} does not train with",
              "use algorithm=grpo/dapo/dr_grpo/bnpo, or profile.per_reward=false")
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
    if init_r < lo.r:
        _fail("adalora.init_r", a.init_r, f"AdaLoRA only masks ranks away: it must be >= lora.r={lo.r}",
              f"e.g. adalora.init_r={math.ceil(1.5 * lo.r)}")


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
