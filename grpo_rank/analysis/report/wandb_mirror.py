"""The report mirrored to W&B: one run (job_type `report`) holding the tables, the figures and the
headline numbers, and optionally a W&B dashboard. W&B is a sink: nothing here can fail the report.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from grpo_rank.allocation.importance import PROJECTIONS
from grpo_rank.analysis.report.jobs import COUNTS, Arm, Job, active


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
        from grpo_rank.pipeline.tracking import WandbSink, resolve_mode

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
            line += "\n\n" + create_dashboard(out, jobs, ident, mode)
        return line
    except Exception as exc:  # the report is the local files; W&B must never fail it
        return f"W&B: skipped after an error ({type(exc).__name__}: {exc}); the local report is complete."


# the config keys whose values make an arm (jobs.Arm): W&B groups the runs by them and averages the seeds
ARM_KEYS = ["config.model.name", "config.task.name", "config.strategy.name", "config.budget.name",
            "config.lora.alpha_mode", "config.profile.signal", "config.algorithm.name", "config.lora.r"]
DASHBOARD_SPEC = "wandb_report.json"


def dashboard(ident: dict, n_layers: int, modules: list[str], entity: str = "", project: str = ""):
    """The W&B Report of a sweep: Table 1 (accuracy by arm, seeds averaged), per-layer and per-module
    gradient-share lines by arm against the training step, and the rank-vs-shift scatter from the report
    run's `report/rank_shift` table. `entity`/`project` empty builds it without any API call (offline)."""
    import wandb_workspaces.reports.v2 as wr

    # the report run logs none of these panels' metrics, so it draws nothing in them
    jobs = wr.Runset(entity=entity, project=project, name="jobs by arm", groupby=ARM_KEYS)
    report_run = wr.Runset(entity=entity, project=project, name="report run", query=ident["name"])
    scatter = wr.CustomChart.from_table("report/rank_shift", chart_fields={"x": "rank", "y": "shift", "color": "arm"},
                                        chart_strings={"title": "allocated rank vs shift in gradient share"})
    scatter.chart_name = "wandb/scatter/v0"
    return wr.Report(
        entity=entity or ident["entity"] or "", project=ident["project"], title=f"grpo-rank: {ident['name']}",
        description="Per-layer LoRA rank allocation under GRPO; runs grouped by arm (mean over seeds).",
        blocks=[
            wr.H1("Table 1: held-out accuracy by arm"),
            wr.P(f"Job groups: {', '.join(ident['job_groups']) or 'n/a'}. Each bar is an arm's mean over its seeds."),
            wr.PanelGrid(runsets=[jobs], panels=[
                wr.BarPlot(title="held-out accuracy (eval/accuracy)", metrics=["eval/accuracy"]),
                wr.LinePlot(title="per-layer share of the gradient norm", x="train/global_step",
                            y=[f"grad_share/layer_{i:02d}" for i in range(n_layers)]),
                wr.LinePlot(title="per-module share of the gradient norm", x="train/global_step",
                            y=[f"grad_share_module/{m}" for m in modules]),
            ]),
            wr.H1("Amplification: allocated rank vs shift in gradient share"),
            wr.P("One point per layer and re-allocated run: its rank and the change of its S(l) share against "
                 "the same-seed uniform run (report table rank_shift; views: raw, scaling-normalised, full-weight)."),
            wr.PanelGrid(runsets=[report_run], panels=[scatter]),
        ])


def panel_names(spec: dict) -> dict[str, set[str]]:
    """What each panel of a serialised Report reads: {"metrics": run metrics and step axes, "tables":
    summary tables, "columns": table columns the charts plot}."""
    names = {"metrics": set(), "tables": set(), "columns": set()}

    def walk(node):
        if isinstance(node, dict):
            cfg = node.get("config") if node.get("viewType") else None
            if isinstance(cfg, dict):
                names["metrics"].update(cfg.get("metrics") or [])
                if cfg.get("xAxis"):
                    names["metrics"].add(cfg["xAxis"])
                names["columns"].update((cfg.get("fieldSettings") or {}).values())
            if node.get("name") == "tableKey" and node.get("value"):
                names["tables"].add(node["value"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    return names


def create_dashboard(out: Path, jobs: list[Job], ident: dict, mode: str) -> str:
    """Builds the W&B Report, writes its spec to `out`/wandb_report.json and, online, saves it to W&B."""
    import importlib.util

    if importlib.util.find_spec("wandb_workspaces") is None:
        return ("W&B dashboard: skipped, the wandb-workspaces package is not installed "
                "(pip install 'grpo-rank[dashboard]').")
    try:
        with_grads = [j for j in active(jobs) if j.grads is not None]
        n_layers = max((j.grads.num_layers for j in with_grads), default=0)
        modules = [m for m in PROJECTIONS if any(m in j.grads.norms.modules for j in with_grads)]
        report = dashboard(ident, n_layers, modules)  # no API call: the spec is the same on- and offline
        (out / DASHBOARD_SPEC).write_text(report._to_model().model_dump_json(by_alias=True, indent=1))
        if mode != "online":
            return (f"W&B dashboard: spec written to `{DASHBOARD_SPEC}`, not saved: W&B mode is {mode} "
                    f"(no API key found); saving needs online mode.")
        import wandb

        entity = ident["entity"] or wandb.Api().default_entity
        report = dashboard(ident, n_layers, modules, entity=entity, project=ident["project"])
        report.save()
        return f"W&B dashboard: {report.url} (spec in `{DASHBOARD_SPEC}`)"
    except Exception as exc:
        return f"W&B dashboard: skipped after an error ({type(exc).__name__}: {exc})."


def _arm_key(r: dict, show: Collection[str] = ()) -> str:
    """strategy_budget, then the alpha mode, signal and algorithm where not the defaults, and r<lora.r>,
    steps<grpo.steps> where `show` names them (keys of a sweep that varies none of them stay as they were)."""
    extra = [str(r[f]) for f in ("alpha_mode", "signal", "algorithm")
             if r.get(f, Arm._field_defaults[f]) != Arm._field_defaults[f]]
    extra += [f"{f}{r[f]}" for f in COUNTS if f in show and r.get(f) not in (None, "")]
    return "_".join([r["strategy"], r["budget"], *extra])


def summary_values(t1: list[dict], st: list[dict]) -> dict:
    # as jobs.varying, on Table 1's rows
    show = {f for f in COUNTS if len({r.get(f) for r in t1 if r.get(f) not in (None, "")}) > 1}
    out = {}
    for r in t1:
        if r["accuracy_mean"] != "":
            out[f"accuracy/{_arm_key(r, show)}"] = r["accuracy_mean"]
    for r in st:
        if r["seed"] in ("mean", "pooled") and r["subset"] == "all" and np.isfinite(r["value"]):
            out[f"{r['statistic']}/{_arm_key(r, show)}"] = r["value"]
    return out
