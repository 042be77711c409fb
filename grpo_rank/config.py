"""Typed configuration: the dataclass schemas behind every YAML in conf/.

`conf/config.yaml` starts from the `grpo_rank_schema` node registered here, so every group file
(model/, task/, strategy/, budget/, experiment/) is merged into a closed, typed structure: a misspelt
key or a wrong type fails at compose time with Hydra's own message. `to_typed` converts the composed
DictConfig to these dataclasses once, at the entry point; nothing below it sees a DictConfig.
`validate` then checks the cross-field rules Hydra cannot express, before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ConfigError(ValueError):
    """A bad setting, reported in one line that names the field and the fix."""


@dataclass
class TinyModelConfig:
    # 12+ layers so that layer 1 and layers 10-19 coexist: the PEFT regex-key collision needs both.
    arch: str = "llama"  # llama | qwen2
    num_layers: int = 12
    hidden_size: int = 64
    intermediate_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int = 512  # size of the BPE tokenizer trained in-process


@dataclass
class ModelConfig:
    name: str = MISSING
    source: str = MISSING  # gguf_package | hub | tiny
    # hub id or local folder (source=hub); folder override for the GGUF (source=gguf_package)
    path: str | None = None
    gguf_package: str | None = None  # a pip package whose folder holds gguf_file
    gguf_file: str | None = None
    dtype: str = "auto"  # auto: bf16 on a GPU that supports it, else fp32
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class TaskConfig:
    name: str = MISSING  # gsm8k | arithmetic
    hub_id: str | None = None
    hub_config: str | None = None
    path: str | None = None  # folder with train.jsonl/test.jsonl; wins over hub_id
    train_size: int | None = None  # None: all of the split
    # arithmetic task only: difficulty knobs
    max_operand: int = 20
    max_ops: int = 1
    system_prompt: str = (
        "Think briefly, then give only the final number. Reply exactly in this format: "
        "<think>your reasoning</think><answer>the number</answer>"
    )


@dataclass
class StrategyConfig:
    name: str = MISSING  # none | uniform | proportional | random


@dataclass
class BudgetConfig:
    name: str = MISSING
    fraction: float = 1.0  # of the uniform total rank, r * num_layers


@dataclass
class LoraSettings:
    r: int = 8  # the uniform rank; the budget is r * num_layers * budget.fraction
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))
    r_min: int = 4
    r_max: int = 64
    multiple: int = 4
    # Controls for the scaling artefact (with fixed alpha, ||grad B|| ~ alpha/sqrt(r), so moving rank
    # alone moves gradient norms). rsLoRA scales by alpha/sqrt(r) instead of alpha/r; alpha_mode=per_rank
    # gives every module alpha * r(l) / lora.r, i.e. the uniform run's scaling alpha/r on every layer.
    use_rslora: bool = False
    alpha_mode: str = "fixed"  # fixed (the study) | per_rank


@dataclass
class GRPOSettings:
    steps: int = 4
    num_generations: int = 4
    per_device_batch_size: int = 8  # completions per micro-batch
    grad_accum: int = 1
    beta: float = 0.05
    learning_rate: float = 5e-5
    max_completion_length: int = 48
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    reward_weights: list[float] = field(default_factory=lambda: [0.5, 1.0])  # format, correctness
    use_vllm: str = "auto"  # auto: only when a GPU and vllm are both present | true | false
    vllm_mode: str = "colocate"
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    # a checkpoint (adapter, optimizer, scheduler, RNG, gradient records) every N optimizer steps, so a
    # killed or preempted job resumes instead of restarting; 0 saves none
    save_steps: int = 25


@dataclass
class ProfileSettings:
    steps: int = 3  # uniform-rank GRPO steps whose gradients define the importance S(l)
    # a finished job folder whose recorded gradients serve as the importance profile
    from_run: str | None = None
    # computed profiles, shared by every job (and Slurm node) that needs the same one; a relative path
    # is taken from the directory the sweep was launched in
    cache_dir: str = "multirun/.profiles"


@dataclass
class EvalSettings:
    split: str = "test"
    n: int | None = 32  # None: the whole split
    batch_size: int = 32
    max_new_tokens: int = 64


@dataclass
class TrackingSettings:
    project: str = "grpo-rank"
    entity: str | None = None
    mode: str = "auto"  # auto: online when an API key is found, else offline | online | offline | disabled


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    strategy: StrategyConfig = MISSING
    budget: BudgetConfig = MISSING
    seed: int = 0
    dry_run: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    profile: ProfileSettings = field(default_factory=ProfileSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    # rerun a job even when its folder already holds a finished result of this config
    force: bool = False
    # where converted model weights are cached between runs
    cache_dir: str = "${oc.env:GRPO_RANK_CACHE,${oc.env:HOME}/.cache/grpo_rank}"


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="grpo_rank_schema", node=RunConfig)


register_configs()


MODEL_SOURCES = ("gguf_package", "hub", "tiny")
TASKS = ("gsm8k", "arithmetic")
STRATEGIES = ("none", "uniform", "proportional", "random")
TRACKING_MODES = ("auto", "online", "offline", "disabled")


def to_typed(cfg: DictConfig) -> RunConfig:
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def _fail(field_name: str, value, problem: str, fix: str) -> None:
    raise ConfigError(f"{field_name}={value!r}: {problem}; {fix}")


def validate(cfg: RunConfig) -> None:
    """Cross-field rules, checked before any model or data loads. Raises ConfigError."""
    m, g, lo = cfg.model, cfg.grpo, cfg.lora
    if m.source not in MODEL_SOURCES:
        _fail("model.source", m.source, "unknown source", f"use one of {', '.join(MODEL_SOURCES)}")
    if m.source == "hub" and not m.path:
        _fail("model.path", m.path, "a hub model needs a hub id or local folder", "set model.path=<id or dir>")
    if m.source == "gguf_package" and not m.gguf_file:
        _fail("model.gguf_file", m.gguf_file, "a GGUF model needs its file name", "set model.gguf_file=<name>.gguf")
    if m.tiny.arch not in ("llama", "qwen2"):
        _fail("model.tiny.arch", m.tiny.arch, "unknown architecture", "use llama or qwen2")
    if cfg.task.name not in TASKS:
        _fail("task.name", cfg.task.name, "unknown task", f"use one of {', '.join(TASKS)}")
    if cfg.task.name == "gsm8k" and not (cfg.task.path or cfg.task.hub_id):
        _fail("task.path", None, "gsm8k needs local files or a hub id", "set task.path=<dir with test.jsonl>")
    if cfg.strategy.name not in STRATEGIES:
        _fail("strategy.name", cfg.strategy.name, "unknown strategy", f"use one of {', '.join(STRATEGIES)}")
    if not 0 < cfg.budget.fraction <= 4:
        _fail("budget.fraction", cfg.budget.fraction, "must be in (0, 4]", "e.g. budget.fraction=0.7")
    if lo.r < 1 or lo.r_min < 1 or lo.r_max < lo.r_min or lo.multiple < 1:
        _fail("lora.r_min", lo.r_min, f"need 1 <= r_min <= r_max and r >= 1 (r={lo.r}, r_max={lo.r_max})",
              "fix the LoRA rank bounds")
    if lo.r_min % lo.multiple or lo.r_max % lo.multiple:
        _fail("lora.multiple", lo.multiple, f"r_min={lo.r_min} and r_max={lo.r_max} must be multiples of it",
              "choose bounds that are multiples of lora.multiple")
    if lo.alpha_mode not in ("fixed", "per_rank"):
        _fail("lora.alpha_mode", lo.alpha_mode, "unknown mode", "use fixed or per_rank")
    if not lo.target_modules:
        _fail("lora.target_modules", lo.target_modules, "is empty", "list at least one projection, e.g. [q_proj]")
    unknown = [t for t in lo.target_modules if t not in ALL_PROJECTIONS]
    if unknown:
        _fail("lora.target_modules", unknown, "unknown projection", f"use names from {ALL_PROJECTIONS}")
    if g.num_generations < 2:
        _fail("grpo.num_generations", g.num_generations, "GRPO needs >= 2 completions per prompt",
              "set grpo.num_generations=4")
    batch = g.per_device_batch_size * g.grad_accum
    if batch % g.num_generations:
        _fail("grpo.per_device_batch_size", g.per_device_batch_size,
              f"the batch per_device_batch_size*grad_accum={batch} must be divisible by "
              f"grpo.num_generations={g.num_generations}",
              f"set grpo.per_device_batch_size to a multiple of {g.num_generations}")
    if g.steps < 1:
        _fail("grpo.steps", g.steps, "must be >= 1", "set grpo.steps=4")
    if g.save_steps < 0:
        _fail("grpo.save_steps", g.save_steps, "must be >= 0", "set grpo.save_steps=25, or 0 for no checkpoints")
    if len(g.reward_weights) != 2:
        _fail("grpo.reward_weights", g.reward_weights, "needs two weights: [format, correctness]",
              "e.g. grpo.reward_weights=[0.5,1.0]")
    if str(g.use_vllm).lower() not in ("auto", "true", "false"):
        _fail("grpo.use_vllm", g.use_vllm, "must be auto, true or false", "set grpo.use_vllm=auto")
    if cfg.strategy.name == "proportional" and cfg.profile.from_run is None and cfg.profile.steps < 1:
        _fail("profile.steps", cfg.profile.steps, "proportional allocation needs a profile",
              "set profile.steps>=1 or profile.from_run=<job dir>")
    if cfg.strategy.name == "proportional" and cfg.dry_run and cfg.profile.from_run is None:
        _fail("profile.from_run", None, "dry_run trains nothing, so it cannot profile for strategy=proportional",
              "pass profile.from_run=<a finished job dir> or use strategy=uniform/random")
    if cfg.eval.n is not None and cfg.eval.n < 1:
        _fail("eval.n", cfg.eval.n, "must be >= 1 or null (whole split)", "set eval.n=32")
    if cfg.eval.batch_size < 1:
        _fail("eval.batch_size", cfg.eval.batch_size, "must be >= 1", "set eval.batch_size=32")
    if cfg.tracking.mode not in TRACKING_MODES:
        _fail("tracking.mode", cfg.tracking.mode, "unknown mode", f"use one of {', '.join(TRACKING_MODES)}")
