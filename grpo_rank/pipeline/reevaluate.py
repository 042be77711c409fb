"""A finished job evaluated again, without training: its base model as its recorded config says, its
saved adapter, and other evaluation settings (the command line is grpo_rank/evaluate.py).

    plan = prepare(job_dir, ["eval.n=null"])   # every check, before any model loads; InputError otherwise
    threads.apply(thread_plan(plan))           # the job's own thread count, before torch is imported
    record = run(plan)                         # loads, evaluates, writes evaluations/<name>/

`prepare` reads the job's result.json, rebuilds its RunConfig from the recorded config, applies the
overrides (only `eval.*`: everything else decides which model is evaluated), checks them as a job's
config is checked (validate), the data split, and the adapter's weights against the sha256 the record
holds. `run` then evaluates with the same code as the job (evaluation/evaluate.py) and writes
`evaluations/<name>/eval.json` (record/evaluation.py) and `outcomes.jsonl`; the job's own result.json
and eval_outcomes.jsonl are never written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from grpo_rank.allocation.allocate import STRATEGIES
from grpo_rank.config.schema import ConfigError, RunConfig, to_typed
from grpo_rank.config.validate import validate
from grpo_rank.data.tasks import check_split
from grpo_rank.record.evaluation import EVAL_OUTCOMES, EvaluationRecord, evaluations_dir, write_record
from grpo_rank.record.files import atomic_dir, write_jsonl
from grpo_rank.record.result import JobResult, RecordError, RuntimeInfo, read_result
from grpo_rank.record.version import code_version
from grpo_rank.runtime import threads
from grpo_rank.training import adapter

log = logging.getLogger(__name__)

EVAL_KEYS = "split, n, batch_size, max_new_tokens, scoring"


@dataclass
class Plan:
    job_dir: Path
    record: JobResult
    cfg: RunConfig
    overrides: list[str]
    name: str  # the folder under evaluations/

    @property
    def folder(self) -> Path:
        return evaluations_dir(self.job_dir) / self.name

    @property
    def same_settings(self) -> bool:
        """Whether these are the settings the job evaluated with (its accuracy must come out again)."""
        return asdict(self.cfg.eval) == self.record.config.get("eval")


def prepare(job_dir: Path, overrides: list[str]) -> Plan:
    """Everything checked that can be without a model; InputError (one line) at the first problem."""
    job_dir = Path(job_dir)
    record = read_result(job_dir)
    cfg = to_typed(_apply(_recorded(record, job_dir), overrides))
    validate(cfg)
    check_split(cfg.task, cfg.eval.split)
    if STRATEGIES[cfg.strategy.name].trains:
        adapter.check(job_dir, record.adapter)
    key = {"eval": asdict(cfg.eval), "adapter": record.adapter.sha256 if record.adapter else None}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{cfg.eval.split}-n{cfg.eval.n or 'all'}-{cfg.eval.scoring}-{digest}"
    return Plan(job_dir, record, cfg, list(overrides), name)


def _recorded(record: JobResult, job_dir: Path):
    """The job's recorded config on the typed schema (settings added since take their defaults)."""
    try:
        return OmegaConf.merge(OmegaConf.structured(RunConfig), record.config)
    except OmegaConfBaseException as exc:
        reason = str(exc).splitlines()[0]
        raise RecordError(f"{job_dir}/result.json: its config does not fit this grpo-rank's settings ({reason}); "
                          "evaluate it with the grpo-rank that trained it") from None


def _apply(base, overrides: list[str]):
    """`base` with the `eval.*` overrides, each typed and checked against the schema."""
    for arg in overrides:
        key, sep, _ = arg.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{arg!r}: an override is key=value; e.g. eval.n=100")
        if not key.startswith("eval."):
            raise ConfigError(f"{key}: only eval.* settings change when a job is evaluated again (the others decide "
                              f"which model it is); use eval.{{{EVAL_KEYS}}}")
    try:
        return OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "eval"
        fix = f"the eval.* keys are {EVAL_KEYS}" if isinstance(exc, ConfigKeyError) else f"give {key} a value of its type"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}; {fix}") from None


def thread_plan(plan: Plan) -> threads.ThreadPlan:
    """The job's own torch thread count (float summation order follows it), unless OMP_NUM_THREADS is set."""
    recorded = plan.record.runtime.threads if plan.record.runtime else None
    if recorded and not os.environ.get("OMP_NUM_THREADS"):
        return threads.ThreadPlan(recorded, "the job's own thread count")
    return threads.plan_threads(None, "basic", 1, threads.available_cores(), dict(os.environ))


def run(plan: Plan, thread_plan: threads.ThreadPlan | None = None, progress: bool = True) -> EvaluationRecord:
    """Load the base model and the adapter, evaluate, write the record; returns it. `thread_plan` is what
    the caller applied (threads.apply, before torch is imported), for the record."""
    cfg, record = plan.cfg, plan.record
    import torch

    from grpo_rank.data import models
    from grpo_rank.data.tasks import load_split
    from grpo_rank.evaluation.evaluate import evaluate
    from grpo_rank.runtime import device

    rt = device.runtime(cfg.model.dtype, False)  # evaluation generates with transformers, never vLLM
    runtime = RuntimeInfo(host=socket.gethostname(), threads=torch.get_num_threads(),
                          threads_source=thread_plan.source if thread_plan else "torch default", device=rt["device"],
                          dtype=rt["dtype"], vllm=False, code_version=code_version())
    start = time.perf_counter()
    log.info("loading %s (%s) and the adapter of %s", cfg.model.name, cfg.model.source, plan.job_dir)
    model, tokenizer = models.load(cfg.model, cfg.cache_dir, cfg.seed)
    if STRATEGIES[cfg.strategy.name].trains:
        model = adapter.load(model, plan.job_dir, record.adapter)
    if device.capabilities().cuda:
        model = model.to("cuda")
    loaded = time.perf_counter()
    test = load_split(cfg.task, cfg.eval.split)
    test = test[: cfg.eval.n] if cfg.eval.n else test
    ev = evaluate(model, tokenizer, test, cfg.task.system_prompt, batch_size=cfg.eval.batch_size,
                  max_new_tokens=cfg.eval.max_new_tokens, few_shot=cfg.task.few_shot, scoring=cfg.eval.scoring,
                  progress=progress)
    out = EvaluationRecord(job=record.job, job_dir=str(plan.job_dir.resolve()), adapter=record.adapter,
                           settings=asdict(cfg.eval), overrides=plan.overrides, eval=ev.summary(cfg.eval.split),
                           runtime=runtime, created=datetime.now(timezone.utc).isoformat(),
                           timings={"load_s": round(loaded - start, 3),
                                    "eval_s": round(time.perf_counter() - loaded, 3)})

    def build(tmp: Path) -> None:
        write_jsonl(tmp / EVAL_OUTCOMES, ev.outcomes)
        write_record(tmp, out)  # last: a folder with eval.json is complete

    plan.folder.parent.mkdir(parents=True, exist_ok=True)
    atomic_dir(plan.folder, build)
    return out
