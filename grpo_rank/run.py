"""One job of the study: profile -> allocate -> train -> evaluate -> record.

    python -m grpo_rank.run                                     # one job, the offline CPU default
    python -m grpo_rank.run -m strategy=uniform,proportional,random seed=0,1,2   # the sweep
    python -m grpo_rank.run strategy=proportional dry_run=true profile.from_run=<job dir>
    python -m grpo_rank.run -m experiment=paper strategy=none,uniform,proportional,random seed=0,1,2
    python -m grpo_rank.run -m hydra/launcher=slurm strategy=uniform,proportional,random seed=0,1,2

Each job writes result.json, grad_norms.parquet, train_log.jsonl and eval_outcomes.jsonl into its
Hydra job folder (see records.py) and mirrors them to one W&B run. Launched again into the same folder
(the same command with the same hydra.sweep.dir, or a Slurm requeue), a finished job is skipped
(`force=true` reruns it) and an unfinished one resumes from its last checkpoint (`grpo.save_steps`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time
import traceback
import warnings
from dataclasses import asdict
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .allocate import STRATEGIES, Bounds, allocate, budget_total
from .config import ConfigError, RunConfig, to_typed, validate

log = logging.getLogger("grpo_rank")


def identity(cfg: RunConfig, job_dir: Path) -> dict:
    """W&B identity from the config: the group is the config without the seed, so dashboards average
    over seeds by themselves; the name says strategy, budget and seed."""
    d = asdict(cfg)
    for k in ("tracking", "dry_run", "cache_dir", "force"):
        d.pop(k)
    d["profile"].pop("cache_dir")  # where profiles are kept and how often to checkpoint change no result
    d["grpo"].pop("save_steps")
    config_hash = _hash(d)
    no_seed = dict(d)
    no_seed.pop("seed")
    return {
        "strategy": cfg.strategy.name, "budget": cfg.budget.name, "budget_fraction": cfg.budget.fraction,
        "seed": cfg.seed, "model": cfg.model.name, "task": cfg.task.name, "config_hash": config_hash,
        "group": f"{cfg.model.name}-{cfg.task.name}-{cfg.strategy.name}-{cfg.budget.name}-{_hash(no_seed)[:8]}",
        "name": f"{cfg.strategy.name}-{cfg.budget.name}-s{cfg.seed}",
        # stable per job folder and config, so a relaunch of the same job resumes the same W&B run
        "run_id": _hash({"dir": str(job_dir.resolve()), "config": config_hash})[:16],
    }


def one_line(exc: BaseException) -> str:
    """An error in one line, named by its root cause: library wrappers put the reason in the cause."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    line = f"{type(root).__name__}: {root}".splitlines()[0]
    return line if root is exc else f"{line} (raised as {type(exc).__name__})"


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class Streamer:
    """Turns profiler steps and trainer logs into W&B metrics named area/name."""

    def __init__(self, sink, phase: str):
        self.sink, self.prefix = sink, "" if phase == "train" else f"{phase}/"

    def step(self, step: int, layer_norms, module_norms: dict) -> None:
        total = float(layer_norms.sum())
        metrics = {f"{self.prefix}train/global_step": step}
        for i, v in enumerate(layer_norms):
            metrics[f"{self.prefix}grad_norm/layer_{i:02d}"] = float(v)
            metrics[f"{self.prefix}grad_share/layer_{i:02d}"] = float(v) / total if total > 0 else 0.0
        mod_total = sum(module_norms.values())
        for mod, v in module_norms.items():
            metrics[f"{self.prefix}grad_share_module/{mod}"] = v / mod_total if mod_total > 0 else 0.0
        self.sink.log(metrics)

    def log(self, row: dict) -> None:
        self.sink.log({f"{self.prefix}train/{k}": v for k, v in row.items()
                       if isinstance(v, (int, float)) and k != "phase"})


def allocation_table(ranks, importance) -> str:
    lines = ["layer  rank  importance_share"]
    tot = sum(importance) if importance else 0.0
    for i, r in enumerate(ranks):
        share = f"{importance[i] / tot:.4f}" if importance and tot > 0 else "-"
        lines.append(f"{i:5d}  {r:4d}  {share}")
    lines.append(f"total  {sum(ranks)}")
    return "\n".join(lines)


def run_job(cfg: RunConfig, job_dir: Path, resolved: dict | None = None) -> dict:
    """Runs one job and returns its result dict; result.json is written even when the job fails."""
    from . import lora, models
    from .evaluate import evaluate
    from .importance import importance as importance_of
    from .profile import Profile, ProfileCache, from_run, profile_key
    from .records import (GRADS, OUTCOMES, RESULT, TRAIN_LOG, replace_phase_rows, write_grad_records, write_json,
                          write_jsonl)
    from .tasks import load_split, prompt_dataset
    from .tracking import WandbSink
    from .train import train

    job_dir.mkdir(parents=True, exist_ok=True)
    ident = identity(cfg, job_dir)
    strategy = STRATEGIES[cfg.strategy.name]
    result: dict = {"status": "running", "error": None, "job": ident,
                    "config": resolved if resolved is not None else asdict(cfg),
                    "allocation": None, "profile": None, "params": None, "train": None, "eval": None,
                    "timings": {}, "wandb": None}
    sink = WandbSink(mode="disabled" if cfg.dry_run else cfg.tracking.mode, project=cfg.tracking.project,
                     entity=cfg.tracking.entity, group=ident["group"], name=ident["name"],
                     tags=[f"strategy:{ident['strategy']}", f"budget:{ident['budget']}", f"seed:{cfg.seed}",
                           f"model:{ident['model']}", f"task:{ident['task']}"],
                     config=result["config"], directory=job_dir, run_id=ident["run_id"])
    result["wandb"] = {"mode": sink.mode, "run_id": sink.run_id, "dir": sink.run_dir, "error": sink.error}
    grads: list[dict] = []
    timer = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal timer
        now = time.perf_counter()
        result["timings"][f"{name}_s"] = round(now - timer, 3)
        timer = now

    start = time.perf_counter()
    try:
        # 1. load: the architecture alone for a dry run, else the model and the data
        if cfg.dry_run:
            hf = models.hf_config(cfg.model, cfg.cache_dir)
            model = tokenizer = None
        else:
            model, tokenizer = models.load(cfg.model, cfg.cache_dir, cfg.seed)
            hf = model.config
            train_set = prompt_dataset(load_split(cfg.task, "train"), cfg.task.system_prompt)
        n_layers = lora.num_layers(hf)
        total = budget_total(cfg.lora.r, n_layers, cfg.budget.fraction, cfg.lora.multiple)
        bounds = Bounds(cfg.lora.r_min, cfg.lora.r_max, cfg.lora.multiple)
        lap("load")

        # 2. profile: importance S(l), only for strategies that need it
        importance = None
        if strategy.needs_profile:
            if cfg.profile.from_run:
                importance, result["profile"] = from_run(cfg.profile.from_run)
            else:
                uniform_ranks = allocate("uniform", total=cfg.lora.r * n_layers, bounds=bounds,
                                         num_layers=n_layers, r=cfg.lora.r)
                key = profile_key(cfg, uniform_ranks)

                def compute(work_dir: Path) -> Profile:
                    log.info("profiling: %d GRPO steps at uniform rank %d", cfg.profile.steps, cfg.lora.r)
                    prof = train(model, tokenizer, train_set, uniform_ranks, cfg, phase="profile",
                                 steps=cfg.profile.steps, job_dir=job_dir, output_dir=work_dir,
                                 on_step=Streamer(sink, "profile").step, on_log=Streamer(sink, "profile").log)
                    return Profile(prof.grads, prof.log_rows, {
                        "steps": cfg.profile.steps, "nonzero_spread_fraction": prof.nonzero_spread_fraction,
                        "computed_by": str(job_dir.resolve()), "resumed_from_step": prof.resumed_from})

                cache = ProfileCache(cfg.profile.cache_dir)
                profile, source = cache.get_or_compute(key, compute)
                grads.append(profile.grads)
                importance = importance_of(profile.grads, "profile").tolist()
                result["profile"] = {"source": source, "hash": key, "steps": cfg.profile.steps,
                                     "path": str(cache.entry(key).resolve()), "sha256": profile.sha256,
                                     "computed_by": profile.meta.get("computed_by"),
                                     "resumed_from_step": profile.meta.get("resumed_from_step"),
                                     "nonzero_spread_fraction": profile.meta.get("nonzero_spread_fraction")}
                if source == "profiled":
                    model, tokenizer = models.load(cfg.model, cfg.cache_dir, cfg.seed)  # a clean base model
                # the job's log holds its profile either way, so a job folder reads the same from either source
                replace_phase_rows(job_dir / TRAIN_LOG, "profile", profile.log_rows)
            lap("profile")

        # 3. allocate: pure math from importance and budget to per-layer ranks
        ranks = allocate(cfg.strategy.name, importance, total=total, bounds=bounds, num_layers=n_layers,
                         seed=cfg.seed, r=cfg.lora.r)
        planned = lora.planned_params(hf, ranks, cfg.lora.target_modules) if ranks else 0
        result["allocation"] = {"ranks": ranks, "total": sum(ranks) if ranks else 0, "budget_total": total,
                                "r_min": bounds.r_min, "r_max": bounds.r_max, "multiple": bounds.multiple,
                                "num_layers": n_layers, "importance": importance}
        result["params"] = {"planned": planned, "built": None}
        if ranks:
            sink.table("allocation", ["layer", "rank", "importance"],
                       [[i, r, importance[i] if importance else None] for i, r in enumerate(ranks)])
            sink.summary({"params/trainable": planned, "allocation/total_rank": sum(ranks)})
        if cfg.dry_run:
            if ranks:
                result["params"]["built"] = lora.meta_build(hf, ranks, cfg.lora)
                print(allocation_table(ranks, importance))
            print(f"strategy={cfg.strategy.name} budget={cfg.budget.name} ({total} of "
                  f"{cfg.lora.r * n_layers} rank): {planned:,} trainable LoRA parameters")
            result["status"] = "dry_run"
            return result
        lap("allocate")

        # 4. train at the allocated ranks
        if strategy.trains:
            out = train(model, tokenizer, train_set, ranks, cfg, phase="train", steps=cfg.grpo.steps,
                        job_dir=job_dir, on_step=Streamer(sink, "train").step, on_log=Streamer(sink, "train").log)
            grads.append(out.grads)
            model = out.model
            result["params"]["built"] = out.built_params
            result["train"] = {"steps": cfg.grpo.steps, "nonzero_spread_fraction": out.nonzero_spread_fraction,
                               "importance": importance_of(out.grads, "train").tolist(),
                               "resumed_from_step": out.resumed_from}
            sink.summary({"params/trainable": out.built_params,
                          "train/nonzero_spread_fraction": out.nonzero_spread_fraction})
        lap("train")

        # 5. evaluate on the held-out split
        test = load_split(cfg.task, cfg.eval.split)
        test = test[: cfg.eval.n] if cfg.eval.n else test
        ev = evaluate(model, tokenizer, test, cfg.task.system_prompt, batch_size=cfg.eval.batch_size,
                      max_new_tokens=cfg.eval.max_new_tokens)
        result["eval"] = ev.summary(cfg.eval.split)
        write_jsonl(job_dir / OUTCOMES, ev.outcomes)
        eval_metrics = {f"eval/{k}": v for k, v in result["eval"].items() if isinstance(v, (int, float))}
        sink.log(eval_metrics)
        sink.summary(eval_metrics)
        lap("eval")
        result["status"] = "ok"
        return result
    except Exception as exc:
        result["status"] = "failed"
        result["error"] = one_line(exc)
        (job_dir / "error.txt").write_text(traceback.format_exc())
        raise
    finally:
        # 6. record: whatever was computed is kept, also when a later stage failed
        import numpy as np

        result["timings"]["total_s"] = round(time.perf_counter() - start, 3)
        if grads:
            cols = {c: np.concatenate([g[c] for g in grads]) for c in grads[0]}
            write_grad_records(job_dir / GRADS, cols)
        write_json(job_dir / RESULT, result)
        sink.finish(exit_code=0 if result["status"] in ("ok", "dry_run") else 1)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .sweep import finished_detail, finished_result, record

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # transformers 5 renames (gradient -> activation checkpointing) warn on every step; not ours to fix
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    try:
        typed = to_typed(cfg)
        validate(typed)
    except ConfigError as exc:
        print(f"grpo-rank: config error: {exc}", file=sys.stderr)
        sys.exit(2)
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    # a relative cache is the launch directory's, also for a job that Slurm starts elsewhere
    cache = Path(typed.profile.cache_dir)
    typed.profile.cache_dir = str(cache if cache.is_absolute() else Path(hc.runtime.cwd) / cache)
    ident = identity(typed, job_dir)

    if not typed.force and finished_result(job_dir, ident["config_hash"]) is not None:
        record(job_dir, "skipped", detail="result.json holds a finished run of this config (force=true reruns it)")
        print(f"{ident['name']}: skipped, already finished -> {job_dir}")
        return
    if typed.force:  # a forced rerun starts afresh rather than resuming an earlier attempt
        for folder in job_dir.glob("trainer_*"):
            shutil.rmtree(folder, ignore_errors=True)
    record(job_dir, "started")
    try:
        result = run_job(typed, job_dir, OmegaConf.to_container(cfg, resolve=True))
    except Exception as exc:
        record(job_dir, "failed", detail=one_line(exc))
        if hc.mode != RunMode.MULTIRUN:
            raise
        # the traceback is in error.txt and this job's log; the sweep goes on and its summary says failed
        log.error("job %s failed; the other jobs go on", job_dir, exc_info=True)
        return
    except BaseException as exc:  # killed from inside Python (Slurm preemption, Ctrl-C): resumable later
        record(job_dir, "interrupted", detail=type(exc).__name__)
        raise
    if result["status"] == "dry_run":
        record(job_dir, "dry_run", detail="allocation only, nothing trained")
        return
    record(job_dir, "finished", detail=finished_detail(result))
    shutil.rmtree(job_dir / "trainer_train", ignore_errors=True)  # checkpoints are done with once recorded
    ev = result.get("eval") or {}
    if ev:
        print(f"{result['job']['name']}: accuracy {ev['accuracy']:.3f} "
              f"[{ev['ci_low']:.3f}, {ev['ci_high']:.3f}] n={ev['n']}  -> {job_dir}")


if __name__ == "__main__":
    main()
