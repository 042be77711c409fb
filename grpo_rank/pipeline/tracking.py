"""Weights & Biases as a sink, and the job's identity. Our local files are the source of truth: a W&B
failure is logged as a warning and never fails a job or loses a local record.

The identity derives from the config: the group is the config without the seed (dashboards average
seeds by themselves), the name says strategy, budget and seed, and the run id is stable per job folder
and config, so a relaunched or requeued job continues the same W&B run.

Mode `auto` (the default) runs online when an API key is found (WANDB_API_KEY, or a `wandb login`
entry in ~/.netrc) and offline otherwise; offline runs land in `<job dir>/wandb/` and can be synced
later with `wandb sync`. The key itself is never read into our config, logs or results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import netrc
import os
import shutil
from pathlib import Path

from grpo_rank.config.schema import RunConfig, result_payload
from grpo_rank.profiling.cache import code_payload
from grpo_rank.record.result import JobIdentity, WandbInfo

log = logging.getLogger(__name__)

# W&B's own `_step` advances on every log call (twice per training step here) and would start a
# proportional job's training after its profile steps; every metric family is plotted against the step of
# the phase it belongs to instead, so the runs of a sweep line up step for step. Evaluation is summary only.
TRAIN_STEP, PROFILE_STEP = "train/global_step", "profile/train/global_step"
STEP_AXES = {"train/*": TRAIN_STEP, "grad_norm/*": TRAIN_STEP, "grad_share/*": TRAIN_STEP,
             "grad_share_module/*": TRAIN_STEP, "rank/*": TRAIN_STEP, "completions": TRAIN_STEP,
             "profile/*": PROFILE_STEP}


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if _logged_in() else "offline"
    return mode


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def job_key(cfg: RunConfig) -> str:
    """The job's identity without the code version: the settings that change its result. A sweep finds a
    job's folder by it (sweep/naming.py), also after the code changed; `config_hash` then decides skip."""
    return _hash({"config": result_payload(cfg, "job")})[:16]


def identity(cfg: RunConfig, job_dir: Path) -> JobIdentity:
    """Who the job is. `config_hash` covers every setting that changes its result and the code version (with
    the sources of the user's reward modules), so a finished job is skipped only when rerunning it would
    compute the same thing."""
    payload = result_payload(cfg, "job")
    config_hash = _hash({"config": payload, "code": code_payload(cfg)})
    no_seed = {k: v for k, v in payload.items() if k != "seed"}
    return JobIdentity(
        strategy=cfg.strategy.name, budget=cfg.budget.name, budget_fraction=cfg.budget.fraction, seed=cfg.seed,
        model=cfg.model.name, task=cfg.task.name, config_hash=config_hash,
        group=f"{cfg.model.name}-{cfg.task.name}-{cfg.strategy.name}-{cfg.budget.name}-{_hash(no_seed)[:8]}",
        name=f"{cfg.strategy.name}-{cfg.budget.name}-s{cfg.seed}",
        run_id=_hash({"dir": str(Path(job_dir).resolve()), "config": config_hash})[:16],
    )


def open_run(cfg: RunConfig, ident: JobIdentity, config: dict, job_dir: Path) -> WandbSink:
    """The job's W&B run (disabled for a dry run), tagged so the UI can filter and group by arm."""
    return WandbSink(mode="disabled" if cfg.dry_run else cfg.tracking.mode, project=cfg.tracking.project,
                     entity=cfg.tracking.entity, group=ident.group, name=ident.name,
                     tags=[f"strategy:{ident.strategy}", f"budget:{ident.budget}", f"seed:{ident.seed}",
                           f"model:{ident.model}", f"task:{ident.task}"],
                     config=config, directory=job_dir, run_id=ident.run_id, step_axes=STEP_AXES)


class Streamer:
    """Turns profiler steps and trainer logs into W&B metrics named area/name."""

    def __init__(self, sink: WandbSink, phase: str):
        self.sink, self.prefix = sink, "" if phase == "train" else f"{phase}/"

    def step(self, step: int, layer_norms, module_norms: dict, layer_ranks=None) -> None:
        total = float(layer_norms.sum())
        metrics = {f"{self.prefix}{TRAIN_STEP}": step}
        if layer_ranks is not None:  # strategy=adalora: each layer's mean rank over its modules at this step
            metrics.update({f"{self.prefix}rank/layer_{i:02d}": float(v) for i, v in enumerate(layer_ranks)})
        for i, v in enumerate(layer_norms):
            metrics[f"{self.prefix}grad_norm/layer_{i:02d}"] = float(v)
            # 0, not stats.shares' NaN, for a step without gradient: W&B line plots break on NaN
            metrics[f"{self.prefix}grad_share/layer_{i:02d}"] = float(v) / total if total > 0 else 0.0
        mod_total = sum(module_norms.values())
        for mod, v in module_norms.items():
            metrics[f"{self.prefix}grad_share_module/{mod}"] = v / mod_total if mod_total > 0 else 0.0
        self.sink.log(metrics)

    def log(self, row: dict) -> None:
        metrics = {f"{self.prefix}train/{k}": v for k, v in row.items()
                   if isinstance(v, (int, float)) and k not in ("phase", "step")}
        if "step" in row:  # the trainer's own step: the row is placed at it, not at the last streamed one
            metrics[f"{self.prefix}{TRAIN_STEP}"] = row["step"]
        self.sink.log(metrics)

    def completions(self, step: int, columns: list[str], rows: list[list]) -> None:
        """A step's sampled completions (training/completions.py) as the table `completions`, at that step."""
        self.sink.table(f"{self.prefix}completions", columns, rows, {f"{self.prefix}{TRAIN_STEP}": step})


SERVICE_ENV = "WANDB_SERVICE"  # wandb.env.SERVICE, named here so tracking imports wandb lazily


def _held_by_inherited_service(exc: Exception) -> bool:
    """True when wandb.init failed because a service this process did not start holds the run id."""
    from wandb.sdk import wandb_setup

    connection = wandb_setup.singleton()._connection
    own = connection is not None and connection.owns_service
    return "is in use" in str(exc) and bool(os.environ.get(SERVICE_ENV)) and not own


def _drop_empty_run_folders(wandb_dir: Path, run_id: str) -> None:
    for folder in wandb_dir.glob(f"*-{run_id}*"):
        if folder.is_dir() and not any(folder.glob("*.wandb")):
            shutil.rmtree(folder, ignore_errors=True)


class WandbSink:
    """One W&B run. Every call is guarded: after the first failure the sink goes quiet."""

    def __init__(self, *, mode: str, project: str, entity: str | None, group: str, name: str,
                 tags: list[str], config: dict, directory: Path, run_id: str | None = None,
                 job_type: str = "train", step_axes: dict[str, str] | None = None):
        self.mode = resolve_mode(mode)
        self.run = None
        self.error: str | None = None
        if self.mode == "disabled":
            return
        try:
            import wandb

            directory.mkdir(parents=True, exist_ok=True)
            kwargs = dict(
                project=project, entity=entity, group=group, name=name, tags=tags, config=config,
                dir=str(directory), mode=self.mode, id=run_id, resume="allow" if run_id else None,
                job_type=job_type, reinit="create_new",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
            )
            try:
                self.run = wandb.init(**kwargs)
            except Exception as exc:
                if not (run_id and _held_by_inherited_service(exc)):
                    raise
                # a SIGKILLed earlier attempt of this job left its stream open in a wandb-core service
                # that outlives it (one inherited through WANDB_SERVICE from a launcher or test runner);
                # the job reclaims its run id from a service of its own
                log.warning("W&B run %s is still held by the inherited service %s; using a private one",
                            run_id, os.environ.get(SERVICE_ENV))
                wandb.teardown()
                os.environ.pop(SERVICE_ENV, None)
                _drop_empty_run_folders(directory / "wandb", run_id)  # the refused init's, with no data
                self.run = wandb.init(**kwargs)
            for step_metric in dict.fromkeys((step_axes or {}).values()):
                self.run.define_metric(step_metric)
            for glob, step_metric in (step_axes or {}).items():
                # step_sync: a row logged without its step metric gets the phase's latest step
                self.run.define_metric(glob, step_metric=step_metric, step_sync=True)
        except Exception as exc:  # W&B is a sink: its failure must not stop the job
            self._fail(exc)

    @classmethod
    def off(cls) -> "WandbSink":
        """A sink that logs nothing: the ranks of a multi-process job other than rank 0."""
        return cls(mode="disabled", project="", entity=None, group="", name="", tags=[], config={},
                   directory=Path("."))

    def _fail(self, exc: Exception) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        log.warning("W&B disabled for this job (%s); local records are unaffected", self.error)
        self.run = None

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def run_dir(self) -> str | None:
        return self.run.dir if self.run is not None else None

    def info(self) -> WandbInfo:
        return WandbInfo(mode=self.mode, run_id=self.run_id, dir=self.run_dir, error=self.error)

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is None:
            return
        try:
            self.run.log(metrics, step=step)
        except Exception as exc:
            self._fail(exc)

    def summary(self, values: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(values)
        except Exception as exc:
            self._fail(exc)

    def table(self, key: str, columns: list[str], rows: list[list], extra: dict | None = None) -> None:
        """`rows` as a W&B table under `key`, logged with the metrics in `extra` (its step, for one)."""
        if self.run is None:
            return
        try:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows), **(extra or {})})
        except Exception as exc:
            self._fail(exc)

    def image(self, key: str, path: Path) -> None:
        if self.run is None:
            return
        try:
            import wandb

            self.run.log({key: wandb.Image(str(path))})
        except Exception as exc:
            self._fail(exc)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as exc:
            self._fail(exc)
        self.run = None
