"""The report mirrored to W&B: one run (job_type `report`) holding the tables, the figures and the
headline numbers, and optionally a W&B dashboard. W&B is a sink: nothing here can fail the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..importance import PROJECTIONS
from .jobs import Arm, Job, active


def _wandb_rows(rows: list[dict]) -> tuple[list[str], list[list]]:
    """Columns of one type each: wandb.Table rejects a column that mixes numbers and text."""
    if not rows:
        return ["empty"], []
    cols = list(rows[0])
    numeric = {c: all(isinstance(r.get(c), (int, float, np.integer, np.floating)) and not isinstance(r.get(c), bool)
                      for r in rows) for c in cols}
    data = [[float(r[c]) if numeric[c] else ("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    return cols, data


def _wandb_identity(jobs: list[Job], sweeps: list[Path]) -> dict:
    ok = active(jobs)
    # the resolved config is a plain dict in the record (JobResult.config); tracking is one of its groups
    tracking = ok[0].result.config.get("tracking", {}) if ok else {}
    groups = {j.result.job.group for j in ok if j.result.job.group}
    first = sweeps[0].resolve()
    # jobs are grouped per strategy x budget, so a sweep has no single group unless it has one arm
    group = next(iter(groups)) if len(groups) == 1 else f"sweep-{first.parent.name}-{first.name}"
    return {"project": tracking.get("project") or "grpo-rank", "entity": tracking.get("entity"), "group": group,
            "name": f"report-{first.parent.name}-{first.name}", "job_groups": sorted(groups)}


def log_wandb(out: Path, jobs: list[Job], sweeps: list[Path], tables: dict[str, list[dict]],
              figures: dict[str, Path], summary: dict, dashboard: bool) -> str:
    """Mirror the report to a W&B run (job_type 'report'); returns one line saying what happened.
    Never raises: W&B is a sink."""
    try:
        from ..tracking import WandbSink, resolve_mode

        ident = _wandb_identity(jobs, sweeps)
        mode = resolve_mode("auto")
        sink = WandbSink(mode=mode, project=ident["project"], entity=ident["entity"], group=ident["group"],
                         name=ident["name"], tags=["report"], job_type="report", directory=out,
                         config={"sweeps": [str(s) for s in sweeps], "jobs": len(jobs),
                                 "finished": len(active(jobs)), "job_groups": ident["job_groups"]})
        if sink.run is None:
            line = f"W&B: not logged ({sink.error or mode})."
        else:
            for key, rows in tables.items():
                cols, data = _wandb_rows(rows)
                sink.table(f"report/{key}", cols, data)
            for key, path in figures.items():
                sink.image(f"report/{key}", path)
            sink.summary(summary)
            run_dir = Path(sink.run_dir).parent if sink.run_dir else out / "wandb"
            url = sink.run.url if mode == "online" else None  # offline runs have none and warn when asked
            sink.finish()
            if sink.error:
                line = f"W&B: logging failed ({sink.error}); the local report is complete."
            elif mode == "offline":
                line = (f"W&B: offline run `{ident['name']}` in group `{ident['group']}` at `{run_dir}`; "
                        f"upload with `wandb sync {run_dir}`.")
            else:
                line = f"W&B: run `{ident['name']}` in group `{ident['group']}`: {url}"
        if dashboard:
            line += "\n\n" + create_dashboard(ident, mode)
        return line
    except Exception as exc:  # the report is the local files; W&B must never fail it
        return f"W&B: skipped after an error ({type(exc).__name__}: {exc}); the local report is complete."


def create_dashboard(ident: dict, mode: str) -> str:
    """A W&B report with the panels named in "Which W&B panels to open" (needs wandb-workspaces, online)."""
    import importlib.util

    if importlib.util.find_spec("wandb_workspaces") is None:
        return "W&B dashboard: skipped, the wandb-workspaces package is not installed (pip install wandb-workspaces)."
    if mode != "online":
        return f"W&B dashboard: skipped, W&B mode is {mode} (no API key found); dashboards need online mode."
    try:
        import wandb
        import wandb_workspaces.reports.v2 as wr

        entity = ident["entity"] or wandb.Api().default_entity
        runs = wr.Runset(entity=entity, project=ident["project"], name="jobs by strategy",
                         groupby=["config.strategy.name"])
        layers = [f"grad_share/layer_{i:02d}" for i in range(64)]
        report = wr.Report(
            entity=entity, project=ident["project"], title=f"grpo-rank: {ident['name']}",
            description="Per-layer LoRA rank allocation under GRPO; runs grouped by strategy (mean over seeds).",
            blocks=[
                wr.H1("Accuracy and gradient shares by strategy"),
                wr.P(f"Sweep groups: {', '.join(ident['job_groups']) or 'n/a'}."),
                wr.PanelGrid(runsets=[runs], panels=[
                    wr.BarPlot(title="eval/accuracy", metrics=["eval/accuracy"]),
                    wr.LinePlot(title="per-layer gradient share", x="Step", y=layers),
                    wr.LinePlot(title="module gradient share", x="Step",
                                y=[f"grad_share_module/{m}" for m in PROJECTIONS]),
                ]),
            ])
        report.save()
        return f"W&B dashboard: {report.url}"
    except Exception as exc:
        return f"W&B dashboard: skipped after an error ({type(exc).__name__}: {exc})."


def _arm_key(r: dict) -> str:
    """strategy_budget, then the alpha mode and signal where not the defaults (keys stay as they were)."""
    extra = [str(r[f]) for f in ("alpha_mode", "signal") if r.get(f, Arm._field_defaults[f]) != Arm._field_defaults[f]]
    return "_".join([r["strategy"], r["budget"], *extra])


def summary_values(t1: list[dict], st: list[dict]) -> dict:
    out = {}
    for r in t1:
        if r["accuracy_mean"] != "":
            out[f"accuracy/{_arm_key(r)}"] = r["accuracy_mean"]
    for r in st:
        if r["seed"] in ("mean", "pooled") and r["subset"] == "all" and np.isfinite(r["value"]):
            out[f"{r['statistic']}/{_arm_key(r)}"] = r["value"]
    return out
