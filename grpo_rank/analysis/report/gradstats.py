"""The study's gradient statistics in long form (stats.csv), and the same measured against the LoRA
scaling artefact.

The artefact: PEFT scales a LoRA module by s(r), and at initialisation (B = 0) its gradient is all in B
with ||grad B|| ~ s(r) sqrt(r). With fixed alpha (s = alpha / r, PEFT's convention; the study states none) that is
alpha / sqrt(r): a module's gradient norm falls with its rank, slope -1/2 in log-log, whatever the
layer's importance; rsLoRA (s = alpha / sqrt(r)) leaves it flat (0) and alpha_mode=per_rank (s =
alpha / lora.r everywhere) makes it rise as sqrt(r) (+1/2). A rank-shift correlation on raw norms
therefore measures the scaling as much as the landscape. Per pair of a re-allocated run and its
same-seed uniform run, besides the study's statistics:
- the scaling slope: OLS of d(l) = mean_m log(n(l, m) / n_unif(l, m)) on x(l) = log(r(l) / r_unif(l)),
  n a module's norm averaged over the training steps, and at the first recorded step (init);
- amplification and rank-shift correlation on three views of S(l) (VIEWS): raw LoRA norms (the
  study's), scaling-normalised ones (importance.scaling_normalised divides s(r) sqrt(r) out of every
  module norm, relative to the uniform rank) and the full-weight signal ||dL/dW||, which no LoRA rank
  or alpha moves.

The rank-shift correlation against the same-seed uniform run (the study's definition) is confounded
when the ranks were allocated from that very run's S(l) (a proportional job takes its profile from the
uniform job of its seed): layers whose share came out high by chance got high ranks, and in any other
run their share regresses, so even with no effect the correlation is expected below 0. For each
gradient-aware arm the shift is therefore also measured against uniform runs independent of the rank
source (independent_rows), and both correlations are printed with their null distribution under no
effect (stats_design.rank_shift_null).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from grpo_rank.allocation.importance import PROJECTIONS, SCALING_SLOPES, scaling_normalised
from grpo_rank.analysis import stats, stats_design
from grpo_rank.analysis.report.jobs import (
    GRADIENT_AWARE,
    Arm,
    Job,
    ModuleNorms,
    arm_name,
    arms_of,
    seed_label,
    uniform_reference,
    varying,
)

STATS_COLUMNS = [*Arm._fields, "seed", "subset", "statistic", "value", "ci_low", "ci_high", "n", "note"]
# statistic-name suffix -> the S(l) it is computed on
VIEWS = {"": "raw LoRA norms", "_normalised": "scaling-normalised LoRA norms", "_full_weight": "full-weight signal"}
FULL_WEIGHT_SLOPE = 0.0  # ||dL/dW|| of the frozen weight does not depend on the LoRA rank
# statistic -> (signal, reduction of the module norms)
SLOPES = {"scaling_slope": ("norms", "mean"), "scaling_slope_init": ("norms", "first"),
          "scaling_slope_full_weight": ("full_weight", "mean"),
          "scaling_slope_full_weight_init": ("full_weight", "first")}
# profile.signal -> the view (VIEWS) of the map its ranks were allocated from
SOURCE_VIEW = {"lora": "", "full_weight": "_full_weight"}
NULL_DRAWS = 1000
ATTENTION = PROJECTIONS[:4]
FFN = PROJECTIONS[4:]


def stat_row(arm: Arm, seed: str, subset: str, statistic: str, value: float, lo=math.nan, hi=math.nan,
             n: int | str = "", note: str = "") -> dict:
    return {**arm._asdict(), "seed": seed, "subset": subset, "statistic": statistic, "value": value,
            "ci_low": lo, "ci_high": hi, "n": n, "note": note}


def statistic_bounds(statistic: str) -> tuple[float, float] | None:
    """The range a statistic cannot leave, for its interval over seeds: correlations [-1, 1]; shares and
    Gini [0, 1]; None for ratios, slopes and the rest."""
    if "pearson" in statistic or "spearman" in statistic:
        return -1.0, 1.0
    if statistic == "gini" or statistic.endswith("_share") or statistic.startswith("share_"):
        return 0.0, 1.0
    return None


def predicted_slope(arm: Arm, signal: str = "norms") -> str:
    """The scaling slope at init that the alpha mode alone produces (SCALING_SLOPES; 0 for full weight),
    as printed: -0.5, 0, 0.5, or n/a for an alpha mode the report does not know."""
    slope = FULL_WEIGHT_SLOPE if signal == "full_weight" else SCALING_SLOPES.get(arm.alpha_mode)
    return "n/a" if slope is None else f"{slope:g}"


def normalisation(job: Job) -> np.ndarray | None:
    """Per layer, the factor s(r0) sqrt(r0) / (s(r) sqrt(r)) that importance.scaling_normalised puts on
    each module norm (all ones for a run at the uniform rank r0); None without ranks or a known mode."""
    ranks, r0 = job.ranks, job.rank_uniform
    if not ranks or r0 is None or job.alpha_mode not in SCALING_SLOPES:
        return None
    # alpha cancels in that ratio in every alpha mode; 1.0 stands in where the record has none
    return scaling_normalised(np.ones(len(ranks)), job.alpha_mode, job.alpha or 1.0, r0, ranks)


def layer_map(job: Job, view: str) -> np.ndarray | None:
    """S(l) of one view (VIEWS) of a job's training gradients; None where the job lacks it."""
    g = job.grads
    if view == "":
        return g.importance
    if view == "_normalised":
        f = normalisation(job)
        # the factor is per layer, so normalising each step's module norms then averaging is this
        return None if f is None or f.size != g.num_layers else (g.norms.mean * f[:, None]).sum(axis=1)
    return g.full_weight.mean.sum(axis=1) if g.full_weight is not None else None


def _common(mine: ModuleNorms, theirs: ModuleNorms, which: str) -> tuple[np.ndarray, np.ndarray]:
    """The two runs' (layers x modules) norms on the modules both recorded, in one order."""
    common = [m for m in mine.modules if m in theirs.modules]
    return (getattr(mine, which)[:, [mine.modules.index(m) for m in common]],
            getattr(theirs, which)[:, [theirs.modules.index(m) for m in common]])


def slope_rows(arm: Arm, j: Job, ref: Job, ref_note: str) -> list[dict]:
    """The scaling slopes of one run against its same-seed uniform run, with OLS t-intervals."""
    if not (j.ranks and ref.ranks and len(j.ranks) == len(ref.ranks) == j.grads.num_layers):
        return []
    rows = []
    for statistic, (signal, which) in SLOPES.items():
        mine, theirs = getattr(j.grads, signal), getattr(ref.grads, signal)
        if mine is None or theirs is None or not mine.mean.shape[0] == theirs.mean.shape[0] == len(j.ranks):
            continue
        if which == "first" and (mine.first is None or theirs.first is None):
            continue  # a run with no gradient at any step has no "at init"; load() notes it
        fit = stats.log_ratio_slope(*_common(mine, theirs, which), j.ranks, ref.ranks)
        skipped = " with a gradient" if mine.empty_steps or theirs.empty_steps else ""
        when = (f"first recorded step{skipped} (step {mine.first_step} vs {theirs.first_step})"
                if which == "first" else "norms averaged over the training steps")
        note = (f"{ref_note}; {when}; OLS over {int(fit['n'])} layers; predicted at init "
                f"{predicted_slope(arm, signal)}" + (f" (alpha_mode={arm.alpha_mode})" if signal == "norms" else ""))
        rows.append(stat_row(arm, seed_label(j), "all", statistic, fit["slope"], fit["low"], fit["high"],
                             int(fit["n"]), note))
    return rows


def view_maps(j: Job, ref: Job):
    """Per view (VIEWS) both runs have on the same layers: (view, S(l) of the run, S(l) of its uniform
    reference, the run's shift in S(l) share, or None when its ranks do not cover its layers)."""
    for view in VIEWS:
        s_x, s_u = layer_map(j, view), layer_map(ref, view)
        if s_x is None or s_u is None or s_x.size != s_u.size:
            continue
        shift = stats.shares(s_x) - stats.shares(s_u) if j.ranks and len(j.ranks) == s_x.size else None
        yield view, s_x, s_u, shift


def pair_rows(arm: Arm, j: Job, ref: Job, ref_note: str) -> tuple[list[dict], dict[str, tuple]]:
    """Per view: amplification (max/min and CV ratios) and the rank-shift correlation of one run vs its
    same-seed uniform run; then the scaling slopes. Also each view's (ranks, shift) for pooling."""
    rows, vectors, seed = [], {}, seed_label(j)
    for view, s_x, s_u, shift in view_maps(j, ref):
        rows.append(stat_row(arm, seed, "all", f"amplification_max_min{view}",
                             stats.max_min_ratio(s_x) / stats.max_min_ratio(s_u), note=ref_note))
        rows.append(stat_row(arm, seed, "all", f"amplification_cv{view}", stats.cv(s_x) / stats.cv(s_u),
                             note=ref_note))
        if shift is not None:
            corr = stats.correlation(j.ranks, shift)
            for key in ("pearson", "spearman"):
                rows.append(stat_row(arm, seed, "all", f"rank_shift_{key}{view}", corr[key], note=ref_note))
            vectors[view] = (np.asarray(j.ranks, dtype=float), shift)
    return rows + slope_rows(arm, j, ref, ref_note), vectors


def _job_stats(arm: Arm, j: Job) -> list[dict]:
    """One job's concentration, stability and module-share statistics."""
    g, seed = j.grads, seed_label(j)
    top = f"k={stats.top_count(g.num_layers)} of {g.num_layers} layers"

    def concentration(subset: str, values: np.ndarray) -> list[dict]:
        return [stat_row(arm, seed, subset, key, value, note=top if key.startswith("top") else "")
                for key, value in stats.concentration(values).items()]

    rows = concentration("all", g.importance)
    # same-shape statistics on scaling-normalised norms: the rank moves A's and B's shapes and the scaling
    f = normalisation(j)
    f = f if f is not None and f.size == g.num_layers else 1.0
    for proj in g.modules:
        rows += concentration(proj, g.module_importance(proj) * f)
    el = g.early_late
    note = (f"first {int(el['n_early'])} vs last {int(el['n_late'])} of {g.n_steps} steps"
            + ("; windows overlap" if el["overlap"] else ""))
    rows.append(stat_row(arm, seed, "all", "early_late_pearson", el["pearson"], note=note))
    rows.append(stat_row(arm, seed, "all", "early_late_spearman", el["spearman"], note=note))
    groups = {"attention": ATTENTION, "ffn": FFN, **{p: (p,) for p in g.modules}}
    rows += [stat_row(arm, seed, "modules", f"share_{name}", value)
             for name, value in stats.group_shares(g.module_totals, groups).items()]
    return rows


def _with_means(per_seed: list[dict]) -> list[dict]:
    """Append, per (arm, subset, statistic), the mean over seeds with its t-interval (seed = 'mean')."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in per_seed:
        groups[(Arm(*(r[f] for f in Arm._fields)), r["subset"], r["statistic"])].append(r)
    out = list(per_seed)
    for (arm, subset, statistic), rows in groups.items():
        vals = [r["value"] for r in rows if np.isfinite(r["value"])]
        if not vals:
            continue
        mean, lo, hi = stats.t_interval(vals, bounds=statistic_bounds(statistic))
        notes = sorted({r["note"] for r in rows if r["note"]})
        out.append(stat_row(arm, "mean", subset, statistic, mean, lo, hi, len(vals), "; ".join(notes)))
    return out


def _pairs(arms: dict, arm: Arm):
    """(note, run, its same-seed uniform run) for every run of a re-allocated arm with gradient records."""
    with_grads = [j for j in arms[arm] if j.grads is not None]
    ref_arm = uniform_reference(arms, arm) if arm.strategy not in ("none", "uniform") and with_grads else None
    if ref_arm is None:
        return
    ref_by_seed = {j.seed: j for j in arms[ref_arm] if j.grads is not None}
    for j in with_grads:
        ref = ref_by_seed.get(j.seed)
        if ref is not None and ref.grads.num_layers == j.grads.num_layers:
            yield f"vs {arm_name(ref_arm)}", j, ref


def stats_rows(jobs: list[Job]) -> list[dict]:
    """The study's statistics in long form: per seed (seed = 's0', ...), their mean over seeds
    (seed = 'mean', with a t-interval) and pooled rank-shift correlations (seed = 'pooled', with a
    bootstrap interval over seeds). Early/late windows were fixed when the jobs were loaded."""
    arms = arms_of(jobs)
    per_seed: list[dict] = []
    pooled: list[dict] = []
    for arm, arm_jobs in arms.items():
        for j in arm_jobs:
            if j.grads is not None:
                per_seed += _job_stats(arm, j)
        by_view: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        ref_note = ""
        for ref_note, j, ref in _pairs(arms, arm):
            rows, vectors = pair_rows(arm, j, ref, ref_note)
            per_seed += rows
            for view, (ranks, shift) in vectors.items():
                by_view[view][0].append(ranks)
                by_view[view][1].append(shift)
        pooled += _pooled_rows(arm, by_view, "", ref_note)
        if arm.strategy in GRADIENT_AWARE:
            rows, more = independent_rows(arms, arm, by_view)
            per_seed += rows
            pooled += more
    return _with_means(per_seed) + pooled


def _pooled_rows(arm: Arm, by_view: dict, suffix: str, ref_note: str) -> list[dict]:
    """Per view, the rank-shift correlations pooled over the seeds' (rank, shift) pairs with their seed
    bootstrap interval; statistic rank_shift_<key><view><suffix>."""
    rows = []
    for view, (ranks_all, shifts_all) in by_view.items():
        boot = stats.seed_bootstrap_correlation(ranks_all, shifts_all)
        note = ref_note + ("; bootstrap over seeds" if len(ranks_all) >= 2 else "; one seed: no interval")
        for key in ("pearson", "spearman"):
            rows.append(stat_row(arm, "pooled", "all", f"rank_shift_{key}{view}{suffix}", boot[key],
                                 boot[f"{key}_low"], boot[f"{key}_high"], len(ranks_all), note))
    return rows


def rank_source(j: Job, ref: Job) -> str:
    """Whether the run `ref` is where j's ranks came from: "same run" when the S(l) its record allocated
    from (allocation.importance) equals ref's S(l) in the signal it was allocated on, as shares to a
    relative 1e-4 (a uniform job published its training as the profile); "another run" when it differs
    (the job profiled itself, or took its profile elsewhere); "assumed" when the record has no
    importance: then the study's design, a profile taken from the uniform job of the same seed, is
    assumed."""
    alloc = j.result.allocation if j.result else None
    mine = layer_map(ref, SOURCE_VIEW.get(j.signal, ""))
    if alloc is None or alloc.importance is None or mine is None or len(alloc.importance) != mine.size:
        return "assumed"
    same = np.allclose(stats.shares(alloc.importance), stats.shares(mine), rtol=1e-4, atol=1e-12)
    return "same run" if same else "another run"


def independent_rows(arms: dict, arm: Arm, same_run: dict) -> tuple[list[dict], list[dict]]:
    """The rank-shift correlation of a gradient-aware arm against uniform runs independent of its rank
    source, per seed and pooled (statistic rank_shift_<key><view>_independent), and the no-effect null of
    both it and the study's same-run correlation (`same_run`: per view the seeds' (ranks, shift)). The
    independent reference of a seed is its same-seed uniform run when that run is not the rank source (a
    replicate of the source's config), else the mean share of the other seeds' uniform runs."""
    ref_arm = uniform_reference(arms, arm)
    uniform = [u for u in arms[ref_arm] if u.grads is not None] if ref_arm is not None else []
    per_seed, by_view, designs, how, pairs = [], defaultdict(lambda: ([], [])), [], set(), []
    for ref_note, j, ref in _pairs(arms, arm):
        source = rank_source(j, ref)
        confounded = source != "another run"
        others = ([u for u in uniform if u is not ref and u.grads.num_layers == j.grads.num_layers]
                  if confounded else [ref])
        if not others:
            continue
        said = (f"vs the mean of uniform {' '.join(seed_label(u) for u in others)} (rank source: {seed_label(ref)}, "
                f"{source})" if confounded else f"vs the same-seed uniform run, not the rank source ({source})")
        how.add("other seeds" if confounded else "replicate")
        for view, s_x, _, shift in view_maps(j, ref):
            maps = [layer_map(u, view) for u in others]
            if shift is None or any(m is None or m.size != s_x.size for m in maps):
                continue
            ind = stats.shares(s_x) - np.mean([stats.shares(m) for m in maps], axis=0)
            corr = stats.correlation(j.ranks, ind)
            per_seed += [stat_row(arm, seed_label(j), "all", f"rank_shift_{key}{view}_independent", corr[key],
                                  note=f"{ref_note}; {said}") for key in ("pearson", "spearman")]
            by_view[view][0].append(np.asarray(j.ranks, dtype=float))
            by_view[view][1].append(ind)
        a = j.result.allocation
        designs.append({"total": sum(j.ranks), "r_min": a.r_min, "r_max": a.r_max, "multiple": a.multiple,
                        "confounded": confounded, "n_independent": len(others)})
        pairs.append((j, ref))
    note = f"vs {arm_name(ref_arm)}: independent of the rank source ({', '.join(sorted(how))})" if how else ""
    pooled = _pooled_rows(arm, by_view, "_independent", note)
    if designs:
        pooled += null_rows(arm, uniform, pairs, designs, same_run, by_view)
    return per_seed, pooled


def _shared(pairs: list[tuple[Job, Job]], view: str) -> float:
    """stats_design.seed_shared_fraction of the (strategy run, same-seed uniform run) pairs in one view;
    0 where it cannot be estimated (fewer than 2 pairs with positive maps)."""
    maps = [(layer_map(ref, view), layer_map(j, view)) for j, ref in pairs]
    maps = [(u, x) for u, x in maps if u is not None and x is not None and u.size == x.size and np.all(u > 0)
            and np.all(x > 0)]
    lam = stats_design.seed_shared_fraction([u for u, _ in maps], [x for _, x in maps]) if len(maps) >= 2 else 0.0
    return lam if math.isfinite(lam) else 0.0


def null_rows(arm: Arm, uniform: list[Job], pairs: list[tuple[Job, Job]], designs: list[dict], same_run: dict,
              independent: dict) -> list[dict]:
    """Per view, the no-effect null of the pooled same-run and independent rank-shift correlations
    (stats_design.rank_shift_null over the reference arm's uniform runs, the seed-shared noise fraction
    estimated from the seeds' run pairs): its mean with the central 95% of its draws (seed "null", the
    observed statistic's name) and the observed value's two-sided p against it (seed "pooled",
    statistic <name>_null_p)."""
    source = SOURCE_VIEW.get(arm.signal, "")
    # the null pools the seeds of `designs`: a view whose observed values pool other seeds has none
    views = [v for v in VIEWS if v in same_run and v in independent
             and len(same_run[v][0]) == len(independent[v][0]) == len(designs)]
    maps = {v: [layer_map(u, v) for u in uniform] for v in {source, *views}}
    usable = [v for v in views if all(m is not None for m in maps[v])]
    if len(uniform) < 2 or not usable or any(m is None for m in maps[source]):
        return []
    try:
        shared = {"source": _shared(pairs, source), **{v: _shared(pairs, v) for v in usable}}
        null = stats_design.rank_shift_null(np.array(maps[source]), {v: np.array(maps[v]) for v in usable}, designs,
                                            shared, n_draws=NULL_DRAWS)
    except ValueError:  # a zero S(l) or layers that differ between runs: no null, the observed rows stay
        return []
    rows = []
    for v in usable:
        note = (f"no effect: layer-permuted noise of {len(uniform)} uniform runs, seed-shared fraction "
                f"{shared[v]:.2f} ({shared['source']:.2f} in the rank signal), {NULL_DRAWS} draws, ranks "
                "re-allocated as the arm's (stats_design.rank_shift_null)")
        for kind, observed in (("same_run", same_run[v]), ("independent", independent[v])):
            suffix = "" if kind == "same_run" else "_independent"
            pooled = stats.pooled_correlation(*observed)
            for i, key in enumerate(("pearson", "spearman")):
                name = f"rank_shift_{key}{v}{suffix}"
                summary = stats_design.null_summary(null[v][kind][:, i], pooled[key])
                rows.append(stat_row(arm, "null", "all", name, summary["mean"], summary["low"], summary["high"],
                                     int(summary["n"]), note))
                rows.append(stat_row(arm, "pooled", "all", f"{name}_null_p", summary["p"], n=int(summary["n"]),
                                     note="two-sided p of the pooled value against its no-effect null"))
    return rows


RANK_SHIFT_COLUMNS = ["arm", "seed", "view", "layer", "rank", "shift"]


def rank_shift_rows(jobs: list[Job]) -> list[dict]:
    """Per re-allocated run, view and layer: its rank and its shift in S(l) share against the same-seed
    uniform run (the points behind the rank-shift correlations; rank_shift.csv, the W&B scatter)."""
    rows, arms = [], arms_of(jobs)
    show = varying(arms)  # the arm is named: with lora.r and grpo.steps where arms differ in them
    for arm in arms:
        for _, j, ref in _pairs(arms, arm):
            for view, _, _, shift in view_maps(j, ref):
                if shift is not None:
                    rows += [{"arm": arm_name(arm, show), "seed": seed_label(j), "view": VIEWS[view], "layer": layer,
                              "rank": int(r), "shift": float(d)} for layer, (r, d) in enumerate(zip(j.ranks, shift))]
    return rows
