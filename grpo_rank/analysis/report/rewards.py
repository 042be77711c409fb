"""Per-reward gradient landscapes: which layers each reward drives (rewards.csv, fig5_reward_landscapes.png
and report.md's section of that name), from the jobs' reward_grads.parquet.

    python -m grpo_rank.run -m experiment=cpu_study strategy=uniform profile.per_reward=true seed=0,1,2
    python -m grpo_rank.report SWEEP --no-wandb     # report/rewards.csv, report/fig5_reward_landscapes.png

A step's gradient is exactly the sum of its components' gradients (grpo_rank/training/reward_split.py): one per
reward, the gradient of that reward's share of the advantage, and the KL term's ("kl", beta > 0). Each
component k gets the study's Eq. 2 on its own gradient, S_k(l), by importance.py's group-by as the main
records do. Component norms do not add up to the step's norm, so each landscape is compared with itself
(max/min, top-30% share, Gini), with the others through layer shares S_k(l) / sum_l S_k(l) (which
layers it dominates: shares, because rewards differ in scale) and through its size (norm share), and
with the combined landscape, the step gradient's S(l) of the same phase (grad_norms.parquet). A job
reduces to a RewardSummary of K x L numbers (read one job at a time by discover.load); one phase per
job: the training phase, else the profile phase.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from grpo_rank.allocation.importance import (
    SIGNALS,
    _cube,
    _dictionary_codes,
    _has_full_weight,
    _phase_in_row_groups,
    read_cube,
)
from grpo_rank.analysis import stats
from grpo_rank.analysis.report.figures import stacked_figure
from grpo_rank.analysis.report.gradstats import statistic_bounds
from grpo_rank.analysis.report.jobs import Arm, GradSummary, Job, RewardSummary, arm_name, seed_label, varying
from grpo_rank.analysis.report.tables import arm_labels, fmt, interval, md_table

FIG5 = "fig5_reward_landscapes.png"
KL = "kl"  # reward_split.KL, the KL term's `reward` value; not imported: reward_split imports torch
REWARDS_CSV = "rewards.csv"
REWARD_CSV_COLUMNS = [*Arm._fields, "seed", "reward", "statistic", "value", "ci_low", "ci_high", "n"]
PHASES = ("train", "profile")  # the phase a job's summary uses: the first it recorded
TOP = f"top{round(100 * stats.TOP_FRACTION)}_share"
SCALARS = ("max_min_ratio", TOP, "gini", "norm_share", "pearson_with_combined")
# layer lists, as space-separated layer indices in rewards.csv's value column
LAYER_LISTS = ("dominated_layers", "largest_norm_layers")


def read_reward_summary(path: Path, grads_path: Path, grads: GradSummary | None) -> RewardSummary | None:
    """One job's reward_grads.parquet reduced to S_k(l) per component; `grads` (the job's training-phase
    GradSummary) is the combined landscape of the training phase, and grad_norms.parquet at `grads_path`
    is read for the profile phase's. None when the file has no LoRA rows of either phase."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, read_dictionary=["phase", "module", "matrix", "reward"])
    # as read_cube: the row groups' statistics spare the phase column of a one-phase file (most jobs) and
    # the matrix column of a file without full-weight rows (all of them: the split is of LoRA gradients)
    found = {p: _phase_in_row_groups(pf.metadata, p) for p in PHASES}
    if all(v == "none" for v in found.values()):
        return None
    phase = next((p for p in PHASES if found[p] == "all"), None)
    by_matrix = _has_full_weight(pf.metadata)
    table = pf.read(columns=["step", "layer", "module", "norm", "reward", *(["phase"] if phase is None else []),
                             *(["matrix"] if by_matrix else [])])
    sel = np.ones(table.num_rows, dtype=bool)
    if phase is None:  # the training phase where it has rows, else the profile phase
        codes, names = _dictionary_codes(table.column("phase"))
        present = np.bincount(codes, minlength=len(names)) > 0
        phase = next((p for p in PHASES if p in names and present[names.index(p)]), None)
        if phase is None:
            return None
        sel &= codes == names.index(phase)
    if by_matrix:
        m_codes, m_names = _dictionary_codes(table.column("matrix"))
        sel &= np.array([n in SIGNALS["lora"] for n in m_names], dtype=bool)[m_codes]
    r_codes, r_names = _dictionary_codes(table.column("reward"))
    mod_codes, mod_names = _dictionary_codes(table.column("module"))
    step, layer, norm = (table.column(c).to_numpy() for c in ("step", "layer", "norm"))
    del table
    if not sel.all():
        step, layer, norm, r_codes, mod_codes = step[sel], layer[sel], norm[sel], r_codes[sel], mod_codes[sel]
    if step.size == 0:
        return None
    # the components in record order (the config's rewards), the KL term last; a bincount, not np.unique
    used = np.flatnonzero(np.bincount(r_codes, minlength=len(r_names)))
    first = {int(c): int(np.argmax(r_codes == c)) for c in used}
    order = sorted(first, key=lambda c: (r_names[c] == KL, first[c]))
    n_layers = int(layer.max()) + 1
    importance = np.zeros((len(order), n_layers))
    n_steps = 0
    for k, code in enumerate(order):
        mine = r_codes == code
        # importance.py's group-by on the dictionary codes, as read_cube calls it: no string per row
        cube = _cube(step[mine], layer[mine], mod_codes[mine], mod_names, norm[mine])
        s = cube.layer_importance()
        importance[k, :s.size] = s
        n_steps = max(n_steps, len(cube.steps))
    if phase == "train":
        combined = grads.importance if grads is not None else None
    else:
        cube = read_cube(grads_path, phase) if Path(grads_path).exists() else None
        combined = cube.layer_importance() if cube is not None else None
    if combined is not None and combined.size != n_layers:
        combined = None
    return RewardSummary(phase=phase, n_steps=n_steps, components=[r_names[c] for c in order],
                         importance=importance, combined=None if combined is None else np.asarray(combined, float))


def strict_winners(values: np.ndarray) -> list[list[int]]:
    """Per row k of a (K, L) array, the columns l where row k is strictly larger than every other row;
    NaN never wins, and a tie makes no winner."""
    v = np.where(np.isnan(values), -np.inf, values)
    best = v.max(axis=0)
    wins = v == best
    alone = (wins.sum(axis=0) == 1) & np.isfinite(best)
    return [np.flatnonzero(wins[k] & alone).tolist() for k in range(v.shape[0])]


def _layers(found: list[int]) -> str:
    return " ".join(str(i) for i in found)


def row(arm: Arm, seed: str, reward: str, statistic: str, value, lo=math.nan, hi=math.nan, n: int | str = "") -> dict:
    return {**arm._asdict(), "seed": seed, "reward": reward, "statistic": statistic, "value": value,
            "ci_low": lo, "ci_high": hi, "n": n}


def job_rows(arm: Arm, job: Job) -> list[dict]:
    """One job's statistics, per component (Definitions: per-reward gradient landscapes)."""
    s, seed = job.rewards, seed_label(job)
    totals = s.importance.sum(axis=1)
    grand = totals.sum()
    dominated, largest = strict_winners(stats.shares(s.importance)), strict_winners(s.importance)
    rows = []
    for k, name in enumerate(s.components):
        imp = s.importance[k]
        r = stats.correlation(imp, s.combined)["pearson"] if s.combined is not None else math.nan
        values = {"max_min_ratio": stats.max_min_ratio(imp), TOP: stats.top_share(imp), "gini": stats.gini(imp),
                  "norm_share": float(totals[k] / grand) if grand > 0 else math.nan, "pearson_with_combined": r,
                  "dominated_layers": _layers(dominated[k]), "largest_norm_layers": _layers(largest[k])}
        rows += [row(arm, seed, name, key, value) for key, value in values.items()]
    return rows


def arm_landscape(arm_jobs: list[Job]) -> dict | None:
    """An arm's mean landscape: over its seeds with per-reward records and the same components and layers
    as the first of them, the mean of each component's layer shares and of its S_k(l), the mean combined
    share (when every one of them has it), how many seeds and which phases. None without records."""
    found = [j.rewards for j in arm_jobs if j.rewards is not None]
    if not found:
        return None
    first = found[0]
    same = [s for s in found if s.components == first.components and s.num_layers == first.num_layers]
    combined = [stats.shares(s.combined) for s in same if s.combined is not None]
    return {"components": list(first.components), "n": len(same), "phases": sorted({s.phase for s in same}),
            "shares": np.mean([stats.shares(s.importance) for s in same], axis=0),
            "importance": np.mean([s.importance for s in same], axis=0),
            "combined": np.mean(combined, axis=0) if len(combined) == len(same) else None}


def reward_rows(arms: dict[Arm, list[Job]]) -> list[dict]:
    """rewards.csv: per arm, component and statistic, one row per seed and one for the arm (seed
    'mean'): the scalars' mean over seeds with its t-interval, the layer lists from the mean landscape."""
    out = []
    for arm, arm_jobs in arms.items():
        per_seed = [r for j in arm_jobs if j.rewards is not None for r in job_rows(arm, j)]
        if not per_seed:
            continue
        out += per_seed
        groups: dict[tuple[str, str], list[float]] = defaultdict(list)
        for r in per_seed:
            if r["statistic"] in SCALARS:
                groups[(r["reward"], r["statistic"])].append(r["value"])
        land = arm_landscape(arm_jobs)
        lists = {"dominated_layers": strict_winners(land["shares"]),
                 "largest_norm_layers": strict_winners(land["importance"])}
        for name in dict.fromkeys(r["reward"] for r in per_seed):
            for statistic in SCALARS:
                vals = [v for v in groups[(name, statistic)] if np.isfinite(v)]
                if vals:  # as stats.csv: the mean of the finite values (an all-zero layer's inf is none)
                    out.append(row(arm, "mean", name, statistic,
                                   *stats.t_interval(vals, bounds=statistic_bounds(statistic)), len(vals)))
            if name in land["components"]:
                k = land["components"].index(name)
                out += [row(arm, "mean", name, key, _layers(lists[key][k]), n=land["n"]) for key in LAYER_LISTS]
    return out


def max_residual(jobs: list[Job]) -> tuple[float | None, str, int, int]:
    """(the largest train.reward_split_residual among the jobs with per-reward records, that job, how many
    jobs have one, how many have records but no residual)."""
    with_records = [j for j in jobs if j.rewards is not None]
    known = [(j.result.train.reward_split_residual, j.where) for j in with_records
             if j.result.train is not None and j.result.train.reward_split_residual is not None]
    if not known:
        return None, "", 0, len(with_records)
    value, where = max(known, key=lambda t: t[0])
    return value, where, len(known), len(with_records) - len(known)


def _span(found: str) -> str:
    """'0 1 2 5' -> '0-2, 5'; '' -> 'none'."""
    runs: list[list[int]] = []
    for layer in (int(x) for x in found.split()):
        if runs and layer == runs[-1][1] + 1:
            runs[-1][1] = layer
        else:
            runs.append([layer, layer])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) or "none"


def section(arms: dict[Arm, list[Job]], rows: list[dict], fields: list[str]) -> list[str]:
    """report.md's "Per-reward gradient landscapes": rewards.csv's arm rows as a table, the decomposition's
    largest residual; or one line saying how to get the records."""
    out = ["## Per-reward gradient landscapes", ""]
    if not rows:
        return out + ["No job has per-reward gradient records (`reward_grads.parquet`): run the jobs with "
                      "`profile.per_reward=true` to get them.", ""]
    jobs = [j for js in arms.values() for j in js]
    idx = {(*(r[f] for f in Arm._fields), r["reward"], r["statistic"]): r for r in rows if r["seed"] == "mean"}
    sizes = sorted({j.rewards.num_layers for j in jobs if j.rewards is not None})
    top = "top-30% share (" + "; ".join(f"k={stats.top_count(n)} of {n}" for n in sizes) + ")"

    def cell(arm: Arm, reward: str, statistic: str) -> str:
        r = idx.get((*arm, reward, statistic))
        if r is None:
            return "n/a"
        if statistic in LAYER_LISTS:
            return _span(r["value"])
        ci = interval(r["ci_low"], r["ci_high"])
        return fmt(r["value"]) + ("" if ci == "n/a" else f" {ci}")

    profile_only = [j.where for j in jobs if j.rewards is not None and j.rewards.phase != "train"]
    out += ["Per component of each step's gradient (a reward's share of the loss; `kl` the KL term), S_k(l) = "
            "Eq. 2 on the component's own gradient, training phase; mean over seeds [95% t-interval]; layers "
            f"from the arm's mean landscape (Definitions). Figure 5: ![fig5]({FIG5}); the rows are `{REWARDS_CSV}`.",
            ""]
    if profile_only:
        out += [f"Profile phase (no training-phase records): {', '.join(profile_only)}.", ""]
    components: dict[Arm, dict[str, None]] = defaultdict(dict)  # per arm, its components in rows' order
    for r in rows:
        components[Arm(*(r[f] for f in Arm._fields))][r["reward"]] = None
    shown = [a for a in arms if a in components]
    out.append(md_table(
        [*(f.replace("_", " ") for f in fields), "reward", "max/min", top, "Gini", "norm share", "r with combined",
         "layers dominated (own share largest)", "layers where its S_k(l) is largest"],
        [[*arm_labels(a, fields), name, *(cell(a, name, s) for s in (*SCALARS, *LAYER_LISTS))]
         for a in shown for name in components[a]]))
    value, where, n_known, n_none = max_residual(jobs)
    said = (f"{value:.3g} (`{where}`), the largest over {n_known} job(s)" if value is not None
            else "n/a: no job's record has it")
    out += [f"Decomposition check: largest relative residual ||G - sum_k G_k - G_kl|| / ||G|| over the training "
            f"steps (result.json's train.reward_split_residual): {said}"
            + (f"; {n_none} job(s) with records have none." if n_none and value is not None else "."), ""]
    return out


def figure5(arms: dict[Arm, list[Job]], path: Path) -> bool:
    """One panel per arm with per-reward records: each component's layer share S_k(l) / sum_l S_k(l)
    (the arm's mean landscape) and the combined landscape's share dashed. Writes nothing and returns
    False when no job has records."""
    found = {a: land for a, js in arms.items() if (land := arm_landscape(js)) is not None}
    if not found:
        return False
    show = varying(arms)
    fig = stacked_figure(len(found))
    for i, (arm, land) in enumerate(found.items()):
        ax = fig.add_subplot(len(found), 1, i + 1)
        x = np.arange(land["shares"].shape[1])
        for k, name in enumerate(land["components"]):
            ax.plot(x, land["shares"][k], marker="o", ms=3, ls=":" if name == KL else "-", label=name)
        if land["combined"] is not None:
            ax.plot(x, land["combined"], color="black", ls="--", lw=1.5, label="combined (the step's gradient)")
        ax.axhline(1 / x.size, color="grey", lw=0.8, alpha=0.6, label="equal share 1/L")
        how = f"mean of {land['n']} seeds" if land["n"] > 1 else "one seed"
        ax.set_title(f"{arm.model} / {arm.task}: {arm_name(arm, show)}\nper-layer share of each component's "
                     f"S_k(l) ({'/'.join(land['phases'])} phase, {how})", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel("S_k(l) / sum over layers")
        ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=120)
    return True
