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
algorithms.ALGORITHMS, tasks.TASKS, hf_task.EXTRACTORS, models.LOADERS) or a dict of choices in this
module. Rules between fields are `validate`'s (reward names: user_rewards.registry, which imports
grpo.reward_modules). The model part (`model.*`) and its rules are in model.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from grpo_rank.allocation.allocate import STRATEGIES
from grpo_rank.allocation.importance import ALPHA_MODES, SIGNALS
from grpo_rank.allocation.sites import LAYER_PATTERN
from grpo_rank.config.fields import (
    JOB_ONLY,
    NO_RESULT,
    ConfigError,
    NonEmpty,
    OneOf,
    Range,
    above,
    at_least,
    payload,
    setting,
)
from grpo_rank.config.model import ModelConfig, TinyModelConfig, check_model  # noqa: F401 - re-exported
from grpo_rank.data import hf_task
from grpo_rank.data.tasks import TASKS
from grpo_rank.objective.algorithms import ALGORITHMS
from grpo_rank.objective.answers import SCORING

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# Closed choices that have no registry of their own elsewhere: value -> what it means.
VLLM_MODES = {"colocate": "vLLM in the training process", "server": "a separate trl vllm-serve"}  # TRL's vllm_mode
EVAL_BACKENDS = {"hf": "transformers generate, the adapter merged (evaluate.py)",
                 "vllm": "vLLM with the adapter as a LoRA request (vllm_eval.py; GPU and vllm only)"}
TRACKING_MODES = {"auto": "online when an API key is found, else offline", "online": "W&B server",
                  "offline": "files under the job folder", "disabled": "no W&B"}


NAME = NonEmpty()
COUNT = at_least(1)


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
    # module names or dotted path tails PEFT targets in every layer (allocation/sites.py), or [all-linear]
    target_modules: list[str] = setting(factory=lambda: list(ALL_PROJECTIONS))
    # where a module's layer number is in its path: the first group of this regex, searched in the path
    layer_pattern: str = setting(LAYER_PATTERN, omit_at=LAYER_PATTERN)
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
    # the demo's 3 (2 cores: a step of 8 completions on SmolLM2 is ~30 s, `make sweep` runs 5 rounds of jobs)
    steps: int = setting(3, JOB_ONLY, valid=COUNT)  # the profile has its own, profile.steps
    num_generations: int = setting(4, valid=at_least(2))  # GRPO compares >= 2 completions per prompt
    per_device_batch_size: int = setting(8, valid=COUNT)  # completions per micro-batch
    grad_accum: int = setting(1, valid=COUNT)
    beta: float = setting(0.05, valid=at_least(0))
    learning_rate: float = setting(5e-5, valid=above(0))
    # the demo's: a finished reply to the arithmetic task takes ~15-25 tokens; at 48, a third to a half of the
    # demo's completions ran on to the limit, generating tokens for a reply that was cut off anyway
    max_completion_length: int = setting(32, valid=COUNT)
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
    # uniform-rank GRPO steps whose gradients define the importance S(l); by default the training's length,
    # so that a uniform job's training is the profile (training/profile.py) and is never computed twice
    steps: int = setting("${grpo.steps}", JOB_ONLY, valid=at_least(0))
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
    # the largest relative residual ||G - sum_k G_k - G_kl|| / ||G|| a step may show before the job stops
    # (reward_split.InexactSplit): float32 rounding is ~1e-7; a larger one means the split is not exact
    per_reward_tolerance: float = setting(1e-4, NO_RESULT, valid=above(0))


@dataclass
class EvalSettings:
    split: str = setting("test", JOB_ONLY)  # one of the task's splits (tasks.TASKS[...].splits)
    n: int | None = setting(32, JOB_ONLY, valid=COUNT)  # None: the whole split
    # one batch for the demo's 32 questions: batches of 8 stop with their own longest reply, yet measured slower
    # on 2 cores (the 32 questions in 32 s at 48 new tokens, against 28 s at 64 in one batch)
    batch_size: int = setting(32, JOB_ONLY, valid=COUNT)
    max_new_tokens: int = setting(48, JOB_ONLY, valid=COUNT)  # room beyond training's 32 for a longer reply
    # what counts as correct (answers.SCORING): `tagged` is the study's correctness reward; `any` also
    # takes an untagged final number (the demo); `math_verify`, any math answer (symbolic.py)
    scoring: str = setting("any", JOB_ONLY, valid=OneOf(lambda: list(SCORING), "scoring"))
    # what generates the replies: transformers (the adapter merged for it) or vLLM with the adapter as a LoRA
    # request (GPU and vllm only); greedy either way, but near-ties may break differently, so it is part of
    # a job's identity (left out at hf, the backend of every job recorded before the setting)
    backend: str = setting("hf", JOB_ONLY, valid=OneOf(EVAL_BACKENDS, "evaluation backend"), omit_at="hf")


@dataclass
class TrackingSettings:
    project: str = setting("grpo-rank", NO_RESULT, valid=NAME)
    entity: str | None = setting(None, NO_RESULT)
    mode: str = setting("auto", NO_RESULT, valid=OneOf(TRACKING_MODES, "tracking mode"))
    # every N training steps, that step's sampled completions with each reward's value: a W&B table and
    # rows of completions.jsonl (training/completions.py); 0 logs none. Only watched, never trained on
    completions_every: int = setting(10, NO_RESULT, valid=at_least(0))


# a Hugging Face repo id: "name" or "namespace/name" (the token's own namespace when none is given)
HUB_REPO_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


@dataclass
class HubSettings:
    # push the trained adapter and its model card (adapter/ in the job folder) to the Hugging Face Hub after
    # the job is evaluated; with no token (HF_TOKEN) or HF_HUB_OFFLINE=1 it is skipped in one logged line
    push: bool = setting(False, NO_RESULT)
    # null: derived from the job's identity, <W&B group>-s<seed> in the token's namespace
    repo: str | None = setting(None, NO_RESULT)
    private: bool = setting(True, NO_RESULT)


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
    hub: HubSettings = field(default_factory=HubSettings)
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
