"""The job record: what one job computed, as versioned dataclasses written to and read from its
`result.json` by one pair of functions, `write_result` and `read_result`.

Every reader (the report, the sweep summary, the skip check of a rerun, `profile.from_run`) gets a
`JobResult`, never a dict: a part a job did not reach is `None`, every field of a part is there. A
result.json of another schema version, or one that is not a record of this shape (truncated, edited,
`null`), is rejected with a `RecordError` whose one line names the file, what is wrong and the fix.

Bump `SCHEMA_VERSION` when a field changes meaning or is removed; adding a field with a default
keeps the version (older files read with the default).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from grpo_rank.errors import InputError
from grpo_rank.record.files import RESULT, write_json

SCHEMA_VERSION = 2


class RecordError(InputError):
    """A record on disk that cannot be read as this version's JobResult; the message is one line."""


@dataclass
class JobIdentity:
    """Who the job is: its arm, seed, and the hashes that decide skip, resume and W&B grouping."""

    strategy: str
    budget: str
    budget_fraction: float
    seed: int
    model: str
    task: str
    config_hash: str  # of every setting that changes a result (config.result_payload)
    group: str  # W&B group: the config without the seed, so dashboards average seeds
    name: str  # <strategy>-<budget>-s<seed>
    run_id: str  # stable per job folder and config: a relaunch resumes the same W&B run


@dataclass
class Allocation:
    ranks: list[int]  # per layer; empty for strategy=none
    total: int  # sum(ranks)
    budget_total: int  # the budget the ranks had to meet
    r_min: int
    r_max: int
    multiple: int
    num_layers: int
    importance: list[float] | None  # S(l) the ranks came from (proportional); None otherwise


@dataclass
class ProfileInfo:
    """Where the importance profile came from. `source`: profiled (this job computed it), cache (another
    job had), from_run (`profile.from_run`), published (a uniform job whose training is the profile: it
    put its records in the profile cache for the gradient-aware jobs of the same settings)."""

    source: str
    steps: int
    phase: str  # the gradient-record phase S(l) was computed from: profile, or train of a uniform job
    path: str  # the cache entry or the earlier job's folder
    key: str | None = None  # profile cache key (profile_key); the earlier job's key for from_run
    sha256: str | None = None  # of the gradient records read
    computed_by: str | None = None  # job folder that computed it
    resumed_from_step: int | None = None
    nonzero_spread_fraction: float | None = None
    signal: str = "lora"  # what S(l) was computed on (importance.SIGNALS)


@dataclass
class TrainInfo:
    steps: int
    nonzero_spread_fraction: float | None  # fraction of steps with reward spread in some group
    importance: list[float]  # S(l) of this run's own training gradients
    resumed_from_step: int | None = None
    importance_full_weight: list[float] | None = None  # S(l) on the frozen weights' gradients (profile.full_weight)
    # profile.per_reward: max over steps of ||G - sum of the per-reward and KL gradients|| / ||G|| (reward_split.py)
    reward_split_residual: float | None = None


@dataclass
class AdaptiveInfo:
    """strategy=adalora: the ranks it ended with (adalora.py). Ranks are per targeted module; a layer's
    rank is the mean over its modules. The trajectory is in grad_norms.parquet's `rank` column."""

    init_r: int  # every module's rank at the start
    target_total: int  # the budget: the arm's total rank times the number of targeted projections
    final_total: int  # the sum of every module's final rank
    final_layer_ranks: list[float]
    final_module_ranks: dict  # projection -> [rank per layer]
    final_params: int  # parameters of the kept triplets (A row, B column, E value): the budget's size
    tinit: int
    tfinal: int
    delta_t: int
    orth_reg_weight: float


@dataclass
class EvalSummary:
    split: str
    n: int
    correct: int
    accuracy: float
    ci_low: float  # 95% Wilson interval (stats.wilson_interval)
    ci_high: float
    parse_failures: int
    parse_failure_rate: float
    generation: dict = field(default_factory=dict)  # the effective decoding settings (evaluate.py)
    # both scorings whatever eval.scoring chose, and the share of replies in the format reward's shape
    # (rewards.well_formed); None in records written before they were recorded
    accuracy_tagged: float | None = None
    accuracy_any: float | None = None
    well_formed_fraction: float | None = None

    # eval.scoring, the scorer that decided `correct` (answers.SCORING); None in records from before the
    # field, whose generation["scoring"] says it
    scoring: str | None = None


@dataclass
class HubInfo:
    """`hub.push`: where the adapter went, or why it did not (the job never fails for it)."""

    repo: str
    pushed: bool
    url: str | None = None  # the commit's URL when pushed
    reason: str | None = None  # one line: why it was skipped or failed


@dataclass
class AdapterInfo:
    """The trained adapter kept in the job folder: `PeftModel.from_pretrained(base, job_dir / path)` is
    the model that was evaluated (training/adapter.py)."""

    path: str  # relative to the job folder
    sha256: str  # of the weights file
    weights: str  # the weights file's name inside `path`
    kind: str  # PEFT's peft_type: LORA, ADALORA
    hub: HubInfo | None = None


@dataclass
class Params:
    planned: int  # closed form from the architecture and the ranks
    built: int | None  # counted on the PEFT model (None until built)


@dataclass
class WandbInfo:
    mode: str
    run_id: str | None
    dir: str | None
    error: str | None


@dataclass
class RuntimeInfo:
    """Where and how the job ran: what changes its speed, and its numbers only through float rounding
    (device and dtype also enter the profile key)."""

    host: str
    threads: int  # torch CPU threads of this job (threads.py)
    threads_source: str  # why that many: the setting, Slurm's CPUs, or the launcher's share of the cores
    device: str  # cpu | cuda
    dtype: str
    vllm: bool
    code_version: str  # version.code_version(): the source and library versions that computed this


@dataclass
class JobResult:
    status: str  # running | ok | failed | dry_run
    job: JobIdentity
    config: dict  # the resolved config as composed (OmegaConf.to_container)
    error: str | None = None  # one line, when failed
    allocation: Allocation | None = None
    profile: ProfileInfo | None = None
    params: Params | None = None
    train: TrainInfo | None = None
    adaptive: AdaptiveInfo | None = None
    eval: EvalSummary | None = None
    adapter: AdapterInfo | None = None  # None for a job that trained nothing, or recorded before adapters were kept
    timings: dict[str, float] = field(default_factory=dict)  # <stage>_s and total_s, wall seconds
    wandb: WandbInfo | None = None
    runtime: RuntimeInfo | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def finished(self) -> bool:
        return self.status == "ok"


def to_dict(result: JobResult) -> dict:
    return dataclasses.asdict(result)


def _build(cls, data, where: str):
    """`data` (parsed JSON) as an instance of dataclass `cls`, checking every field's presence and type."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}: expected an object, found {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _value(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(f"{where}.{f.name} is missing")
    return cls(**kwargs)


def build(cls, data, where: str):
    """`data` (parsed JSON) as the record dataclass `cls`; RecordError (one line) when it is not one."""
    return _build(cls, data, where)


def _value(tp, value, where: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, value, where)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list, found {type(value).__name__}")
        (inner,) = typing.get_args(tp)
        return [_value(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected an object, found {type(value).__name__}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordError(f"{where}: expected a number, found {value!r}"[:200])
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecordError(f"{where}: expected an integer, found {value!r}"[:200])
        return value
    if tp in (str, bool) and not isinstance(value, tp):
        raise RecordError(f"{where}: expected {tp.__name__}, found {value!r}"[:200])
    return value


def from_dict(data, where: str = RESULT) -> JobResult:
    """A parsed result.json as a JobResult; RecordError (one line) when it is not one of this version."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}: not a job record (top level is {type(data).__name__}); "
                          "delete it or rerun the job with force=true")
    version = data.get("schema_version", 1)
    if version == 1:  # the records of grpo-rank 0.1 (no version field) differ only in the profile part
        data = _upgrade_v1(data)
        version = SCHEMA_VERSION
    if version != SCHEMA_VERSION:
        raise RecordError(f"{where}: job record schema version {version}, this grpo-rank reads version "
                          f"{SCHEMA_VERSION}; rerun the job with force=true (or read it with the grpo-rank "
                          "that wrote it)")
    try:
        return _build(JobResult, data, "result")
    except RecordError as exc:
        raise RecordError(f"{where}: {exc}; delete it or rerun the job with force=true") from None


def _upgrade_v1(data: dict) -> dict:
    data = dict(data, schema_version=SCHEMA_VERSION)
    prof = data.get("profile")
    if isinstance(prof, dict):
        prof = dict(prof)
        prof["key"] = prof.pop("hash", None)
        prof.setdefault("phase", "profile")
        prof.setdefault("path", prof.get("computed_by") or "")
        data["profile"] = {k: v for k, v in prof.items() if k in {f.name for f in dataclasses.fields(ProfileInfo)}}
    return data


def write_result(job_dir: Path, result: JobResult) -> Path:
    path = Path(job_dir) / RESULT
    write_json(path, to_dict(result))
    return path


def read_result(job_dir: Path) -> JobResult:
    """The job folder's record; RecordError when it is missing, unreadable or not of this version."""
    path = Path(job_dir) / RESULT
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: no job record; the job has not finished, run it") from None
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: unreadable ({type(exc).__name__}); delete it or rerun the job with "
                          "force=true") from None
    return from_dict(data, str(path))
