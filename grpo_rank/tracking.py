"""Weights & Biases as a sink. Our local files are the source of truth: a W&B failure is logged as a
warning and never fails a job or loses a local record.

Mode `auto` (the default) runs online when an API key is found (WANDB_API_KEY, or a `wandb login`
entry in ~/.netrc) and offline otherwise; offline runs land in `<job dir>/wandb/` and can be synced
later with `wandb sync`. The key itself is never read into our config, logs or results.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

log = logging.getLogger(__name__)


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


class WandbSink:
    """One W&B run. Every call is guarded: after the first failure the sink goes quiet."""

    def __init__(self, *, mode: str, project: str, entity: str | None, group: str, name: str,
                 tags: list[str], config: dict, directory: Path, run_id: str | None = None,
                 job_type: str = "train"):
        self.mode = resolve_mode(mode)
        self.run = None
        self.error: str | None = None
        if self.mode == "disabled":
            return
        try:
            import wandb

            directory.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=project, entity=entity, group=group, name=name, tags=tags, config=config,
                dir=str(directory), mode=self.mode, id=run_id, resume="allow" if run_id else None,
                job_type=job_type, reinit="create_new",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
            )
        except Exception as exc:  # W&B is a sink: its failure must not stop the job
            self._fail(exc)

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

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        if self.run is None:
            return
        try:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})
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
