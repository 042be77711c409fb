"""One job of the study, as a table of contents: load -> profile -> allocate -> train -> evaluate -> record.

Each stage lives in its own module and returns its typed part of the job record (result.py):

    load      architecture (lora.sites_for),       where LoRA goes, from the model's skeleton (refused there
              load_data, load_model               before any weights load); the data (prompts, or solutions for
                                                  sft; before the model, so that a hub dataset's bad rows stop
                                                  the job first), the model and tokenizer (task.chat_template)
    profile   profiling.profile                   S(l) and where it came from (ProfileInfo); a uniform job
                                                  whose training is the profile publishes it (train)
    allocate  allocate.plan, train.planned_params per-layer ranks (Allocation) and Params
    train     train.train                         TrainInfo, the trained model, gradient records
    evaluate  evaluate.evaluate                   EvalSummary and per-question outcomes
    record    result.write_result, records.*      result.json and the other files, also on failure

run.py is the command line around it (Hydra, skip/force, errors); this module is what a job computes.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from grpo_rank.allocation import lora
from grpo_rank.allocation.allocate import STRATEGIES, Bounds, plan
from grpo_rank.allocation.importance import FULL_WEIGHT, layer_importance
from grpo_rank.config.schema import RunConfig
from grpo_rank.config.validate import check_per_reward
from grpo_rank.data import models
from grpo_rank.data.tasks import chat_template_text, load_split, prompt_dataset, solution_dataset
from grpo_rank.errors import one_line
from grpo_rank.evaluation.evaluate import evaluate
from grpo_rank.evaluation.vllm_eval import evaluate_vllm
from grpo_rank.objective.algorithms import ALGORITHMS
from grpo_rank.pipeline import hub, tracking
from grpo_rank.pipeline.preflight import check_golds, splits_read
from grpo_rank.record.files import GRADS, OUTCOMES, REWARD_COLUMNS, REWARD_GRADS, write_grad_records, write_jsonl
from grpo_rank.record.result import JobResult, Params, RuntimeInfo, TrainInfo, write_result
from grpo_rank.record.version import code_version
from grpo_rank.runtime import device, distributed
from grpo_rank.runtime.threads import ThreadPlan
from grpo_rank.training import adalora, adapter
from grpo_rank.training import profile as profiling
from grpo_rank.training.train import planned_params, train

log = logging.getLogger("grpo_rank")


class Laps:
    """Wall seconds per stage, into the record's `timings` as <stage>_s."""

    def __init__(self, timings: dict[str, float]):
        self.timings, self.start = timings, time.perf_counter()
        self.last = self.start

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[f"{stage}_s"] = round(now - self.last, 3)
        self.last = now

    def total(self) -> None:
        self.timings["total_s"] = round(time.perf_counter() - self.start, 3)


def runtime_info(cfg: RunConfig, plan: ThreadPlan | None) -> RuntimeInfo:
    rt = device.runtime(cfg.model.dtype, cfg.grpo.use_vllm)
    check_per_reward(cfg, vllm=rt["vllm"])  # grpo.use_vllm=null is only known here, still before any model loads
    return RuntimeInfo(host=socket.gethostname(), threads=torch.get_num_threads(),
                       threads_source=plan.source if plan else "torch default", device=rt["device"],
                       dtype=rt["dtype"], vllm=rt["vllm"], code_version=code_version())


def training_data(cfg: RunConfig, examples=None):
    """The training split as the algorithm reads it: prompts for a rewarded one, gold solutions for sft."""
    build = prompt_dataset if ALGORITHMS[cfg.algorithm.name].rewarded else solution_dataset
    examples = load_split(cfg.task, "train") if examples is None else examples
    return build(examples, cfg.task.system_prompt, cfg.task.few_shot)


def load_data(cfg: RunConfig) -> dict:
    """The splits the job reads (tasks.load_split), by name. A hub dataset's gold answers are checked here as
    preflight checks local files' (check_golds), before any model loads."""
    out = {split: load_split(cfg.task, split) for split in sorted(splits_read(cfg))}
    if cfg.task.name == "hf" and not cfg.task.path:
        for split, examples in out.items():
            check_golds(cfg, split, [(f"task.hub_id={cfg.task.hub_id!r} {split} row {i + 1}", e)
                                     for i, e in enumerate(examples)])
    return out


def load_model(cfg: RunConfig):
    """The model and its tokenizer, with `task.chat_template` in place of the tokenizer's own when set."""
    model, tokenizer = models.load(cfg.model, cfg.cache_dir, cfg.seed)
    template = chat_template_text(cfg.task)
    if template is not None:
        tokenizer.chat_template = template
    return model, tokenizer


def architecture(cfg: RunConfig) -> tuple[object, list[lora.Site]]:
    """The model's config and, where the strategy trains LoRA, its sites, read off its skeleton on the meta
    device: an architecture lora.target_modules gives no per-layer plan on is refused here (SiteError),
    before any weights load."""
    hf = models.hf_config(cfg.model, cfg.cache_dir)
    strategy = STRATEGIES[cfg.strategy.name]
    if not (strategy.trains or strategy.needs_profile):
        return hf, []
    return hf, lora.sites_for(lora.skeleton(hf, cfg.model.trust_remote_code), cfg.lora)


def allocation_table(ranks, importance) -> str:
    lines = ["layer  rank  importance_share"]
    tot = sum(importance) if importance else 0.0
    for i, r in enumerate(ranks):
        share = f"{importance[i] / tot:.4f}" if importance and tot > 0 else "-"
        lines.append(f"{i:5d}  {r:4d}  {share}")
    lines.append(f"total  {sum(ranks)}")
    return "\n".join(lines)


@dataclass
class Loaded:
    """What the load stage gives the others: the architecture, and for a real run the model and data."""

    hf: object  # the transformers config
    sites: list  # where LoRA goes (lora.Site), [] for an arm that trains none
    n_layers: int
    model: object | None = None
    tokenizer: object | None = None
    train_set: object | None = None
    data: dict = field(default_factory=dict)  # the splits the job reads, by name (load_data)


@dataclass
class GradRecords:
    """Every phase's gradient records (and per-reward splits), written whatever happens to the job."""

    grads: list[dict[str, np.ndarray]] = field(default_factory=list)
    reward_grads: list[dict[str, np.ndarray]] = field(default_factory=list)

    def add(self, grads: dict | None, reward_grads: dict | None) -> None:
        if grads:
            self.grads.append(grads)
        if reward_grads:
            self.reward_grads.append(reward_grads)

    def write(self, job_dir: Path) -> None:
        if self.grads:
            write_grad_records(job_dir / GRADS, {c: np.concatenate([g[c] for g in self.grads]) for c in self.grads[0]})
        if self.reward_grads:
            write_grad_records(job_dir / REWARD_GRADS, {c: np.concatenate([g[c] for g in self.reward_grads])
                                                        for c in REWARD_COLUMNS}, REWARD_COLUMNS)


def run_job(cfg: RunConfig, job_dir: Path, resolved: dict | None = None,
            thread_plan: ThreadPlan | None = None) -> JobResult:
    """Runs one job and returns its record; result.json is written even when the job fails."""
    job_dir.mkdir(parents=True, exist_ok=True)
    main = distributed.is_main()  # of a multi-process job (launch.py) only rank 0 writes and evaluates
    result, sink = open_job(cfg, job_dir, resolved, thread_plan, main)
    records, laps = GradRecords(), Laps(result.timings)
    try:
        loaded = load(cfg)
        laps("load")
        importance = None
        if STRATEGIES[cfg.strategy.name].needs_profile:
            importance = profile_stage(cfg, loaded, job_dir, sink, result, records)
            laps("profile")
        ranks = allocate_stage(cfg, loaded, importance, result, sink)
        if cfg.dry_run:
            return _dry_run(cfg, result, loaded.hf)
        laps("allocate")
        model = train_stage(cfg, loaded, ranks, job_dir, sink, result, records)
        laps("train")
        if main:  # training was the collective part; rank 0 alone evaluates and records
            if STRATEGIES[cfg.strategy.name].trains:  # kept before evaluation can fail (training/adapter.py)
                result.adapter = adapter.save(model, job_dir, adapter.card(cfg, result))
                laps("adapter")
            evaluate_stage(cfg, model, loaded.tokenizer, loaded.data.get(cfg.eval.split), job_dir, sink, result)
            laps("eval")
            hub.publish(cfg, result, job_dir)  # the card gains the accuracy; hub.push=true pushes (never fails the job)
        result.status = "ok"
        return result
    except Exception as exc:
        result.status, result.error = "failed", one_line(exc)
        if main:
            (job_dir / "error.txt").write_text(traceback.format_exc())
        raise
    finally:
        # record: whatever was computed is kept, also when a later stage failed
        laps.total()
        if main:
            records.write(job_dir)
        sink.finish(exit_code=0 if result.status in ("ok", "dry_run") else 1)
        result.wandb.error = sink.error
        if main:
            write_result(job_dir, result)


def open_job(cfg: RunConfig, job_dir: Path, resolved: dict | None, plan: ThreadPlan | None,
             main: bool) -> tuple[JobResult, tracking.WandbSink]:
    """The job's record, started, and its W&B sink (off on the ranks that do not write)."""
    ident = tracking.identity(cfg, job_dir)
    # runtime_info resolves use_vllm: true without a GPU is an InputError here, before any model loads
    result = JobResult(status="running", job=ident, config=resolved if resolved is not None else asdict(cfg),
                       runtime=runtime_info(cfg, plan))
    sink = tracking.open_run(cfg, ident, result.config, job_dir) if main else tracking.WandbSink.off()
    result.wandb = sink.info()
    return result, sink


def load(cfg: RunConfig) -> Loaded:
    """The architecture and where LoRA goes on it; for a real run also the model, its tokenizer and the
    training data."""
    hf, sites = architecture(cfg)
    n_layers = lora.num_layers(sites) if sites else lora.config_layers(hf)
    if cfg.dry_run:
        return Loaded(hf=hf, sites=sites, n_layers=n_layers)
    device.check_gpu_settings(cfg.model.quantization, cfg.model.attn_implementation)
    data = load_data(cfg)
    log.info("loading model %s", cfg.model.name)
    model, tokenizer = load_model(cfg)
    return Loaded(hf=hf, sites=sites, n_layers=n_layers, model=model, tokenizer=tokenizer,
                  train_set=training_data(cfg, data["train"]) if "train" in data else None, data=data)


def profile_stage(cfg: RunConfig, loaded: Loaded, job_dir: Path, sink, result: JobResult,
                  records: GradRecords) -> list[float] | None:
    """S(l) for a gradient-aware allocation, from the cache, another run or a profiling phase."""
    stream = tracking.Streamer(sink, "profile")
    prof = profiling.profile(cfg, loaded.model, loaded.tokenizer, loaded.train_set, loaded.n_layers, job_dir,
                             on_step=stream.step, on_log=stream.log)
    result.profile = prof.info
    records.add(prof.grads, prof.reward_grads)
    if prof.base_touched:  # the profiling phase trained this model: start the next from a clean base
        loaded.model, loaded.tokenizer = load_model(cfg)
    return prof.importance


def allocate_stage(cfg: RunConfig, loaded: Loaded, importance, result: JobResult, sink) -> list[int]:
    """Per-layer ranks under the budget, and the trainable parameters they plan."""
    bounds = Bounds(cfg.lora.r_min, cfg.lora.r_max, cfg.lora.multiple)
    result.allocation = plan(cfg.strategy.name, importance, r=cfg.lora.r, num_layers=loaded.n_layers,
                             fraction=cfg.budget.fraction, bounds=bounds, seed=cfg.seed)
    ranks = result.allocation.ranks
    result.params = Params(planned=planned_params(cfg, loaded.sites, ranks), built=None)
    if ranks:
        sink.table("allocation", ["layer", "rank", "importance"],
                   [[i, r, importance[i] if importance else None] for i, r in enumerate(ranks)])
        sink.summary({"params/trainable": result.params.planned, "allocation/total_rank": sum(ranks)})
    return ranks


def train_stage(cfg: RunConfig, loaded: Loaded, ranks: list[int], job_dir: Path, sink, result: JobResult,
                records: GradRecords):
    """Trains at the allocated ranks (nothing for the base-model arm); returns the model to evaluate."""
    if not STRATEGIES[cfg.strategy.name].trains:
        return loaded.model
    streams = dict(on_step=tracking.Streamer(sink, "train").step, on_log=tracking.Streamer(sink, "train").log,
                   on_completions=tracking.Streamer(sink, "train").completions)
    if profiling.publishes(cfg, ranks, loaded.n_layers):  # this training is also the gradient-aware arms' profile
        out, result.profile = profiling.train_publishing(cfg, loaded.model, loaded.tokenizer, loaded.train_set,
                                                         ranks, job_dir, **streams)
    else:
        out = train(loaded.model, loaded.tokenizer, loaded.train_set, ranks, cfg, phase="train",
                    steps=cfg.grpo.steps, job_dir=job_dir, **streams)
    records.add(out.grads, out.reward_grads)
    result.params.built = out.built_params
    if STRATEGIES[cfg.strategy.name].adaptive:  # the ranks AdaLoRA ended on; the trajectory is in the records
        result.adaptive = adalora.adaptive_info(out.model, cfg, loaded.sites,
                                                adalora.target_total(loaded.sites, ranks))
    result.train = TrainInfo(steps=cfg.grpo.steps, nonzero_spread_fraction=out.nonzero_spread_fraction,
                             importance=layer_importance(out.grads, "train").tolist(),
                             importance_full_weight=_full_weight_importance(out.grads),
                             resumed_from_step=out.resumed_from, reward_split_residual=out.reward_residual)
    sink.summary({"params/trainable": out.built_params, "train/nonzero_spread_fraction": out.nonzero_spread_fraction})
    return out.model


def evaluate_stage(cfg: RunConfig, model, tokenizer, test, job_dir: Path, sink, result: JobResult) -> None:
    """Greedy evaluation on the held-out split (`test`, loaded with the data, or read here): the summary
    into the record, every question into OUTCOMES."""
    test = load_split(cfg.task, cfg.eval.split) if test is None else test
    test = test[: cfg.eval.n] if cfg.eval.n else test
    if cfg.eval.backend == "vllm":
        ev = evaluate_vllm(model, tokenizer, test, cfg)
    else:
        ev = evaluate(model, tokenizer, test, cfg.task.system_prompt, batch_size=cfg.eval.batch_size,
                      max_new_tokens=cfg.eval.max_new_tokens, few_shot=cfg.task.few_shot, scoring=cfg.eval.scoring)
    result.eval = ev.summary(cfg.eval.split)
    write_jsonl(job_dir / OUTCOMES, ev.outcomes)
    metrics = {f"eval/{k}": v for k, v in asdict(result.eval).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    sink.summary(metrics)  # evaluation is one number per run, not a point on the step axis
    if ev.outcomes:
        columns = list(ev.outcomes[0])
        sink.table("eval/outcomes", columns, [[_cell(o.get(c)) for c in columns] for o in ev.outcomes])


def _cell(value):
    """A W&B table cell: one type per column, so a missing parse is an empty string, not None."""
    return value if isinstance(value, (bool, int, float, str)) else ("" if value is None else str(value))


def _full_weight_importance(grads: dict[str, np.ndarray]) -> list[float] | None:
    """S(l) on the frozen weights' gradients, when they were recorded (profile.full_weight)."""
    if FULL_WEIGHT not in set(np.asarray(grads["matrix"]).astype(str).tolist()):
        return None
    return layer_importance(grads, "train", signal="full_weight").tolist()


def _dry_run(cfg: RunConfig, result: JobResult, hf) -> JobResult:
    """The allocation and the exact trainable count (PEFT built on the meta device), nothing trained."""
    alloc = result.allocation
    if alloc.ranks and not STRATEGIES[cfg.strategy.name].adaptive:  # adalora's ranks are only known once trained
        result.params.built = lora.meta_build(hf, alloc.ranks, cfg.lora, cfg.model.trust_remote_code)
        print(allocation_table(alloc.ranks, alloc.importance))
    print(f"strategy={cfg.strategy.name} budget={cfg.budget.name} ({alloc.budget_total} of "
          f"{cfg.lora.r * alloc.num_layers} rank): {result.params.planned:,} trainable LoRA parameters")
    result.status = "dry_run"
    return result
