"""The capacity curve (report/capacity.py): capacity.csv against means, intervals and parameter counts
computed by hand from the jobs' result.json, the order of its rows, and Figure 3.

    python -m pytest tests/test_report_capacity.py -q
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from grpo_rank.analysis import report as rp
from grpo_rank.analysis.report.capacity import capacity_points, figure3
from grpo_rank.analysis.stats import wilson_interval
from tests.conftest import read_csv
from tests.synthetic import make_sweep

SMALL = dict(steps=3, layers=4, modules=2, n_questions=40)


@pytest.fixture(scope="module")
def capacity(tmp_path_factory):
    """The curve, uniform at lora.r 8, 2, 4 (out of order) x 2 seeds; beside it the base model and
    proportional and random at lora.r 8, 2 seeds each."""
    root = tmp_path_factory.mktemp("capacity")
    curve = make_sweep(root / "multirun" / "d" / "curve", jobs=6, strategies=("uniform",), lora_rs=(8, 2, 4), **SMALL)
    arms = make_sweep(root / "multirun" / "d" / "arms", jobs=6, strategies=("none", "proportional", "random"), **SMALL)
    rep = rp.build([curve, arms], root / "out", use_wandb=False, progress=False)
    return [curve, arms], root / "out", rep


def by_hand(sweeps: list[Path]) -> dict[tuple, dict]:
    """Per (strategy, lora.r) from the records: accuracies, trainable parameter counts (params.built)."""
    found: dict[tuple, dict] = {}
    for record in sorted(p for s in sweeps for p in s.glob("*/result.json")):
        r = json.loads(record.read_text())
        strategy = r["job"]["strategy"]
        key = (strategy, None if strategy == "none" else r["config"]["lora"]["r"])
        arm = found.setdefault(key, {"acc": [], "params": []})
        arm["acc"].append(r["eval"]["correct"] / r["eval"]["n"])
        arm["params"].append(r["params"]["built"])
    return found


def test_capacity_csv_equals_the_records_by_hand(capacity):
    sweeps, out, _ = capacity
    rows = read_csv(out / "capacity.csv")
    assert [(r["kind"], r["strategy"], r["r"]) for r in rows] == [
        ("base", "none", ""), ("uniform", "uniform", "2"), ("uniform", "uniform", "4"), ("uniform", "uniform", "8"),
        ("allocation", "proportional", "8"), ("allocation", "random", "8")]
    hand = by_hand(sweeps)
    for row in rows:
        arm = hand[(row["strategy"], int(row["r"]) if row["r"] else None)]
        acc = np.array(arm["acc"])
        mean = acc.mean()
        assert float(row["accuracy_mean"]) == pytest.approx(mean, rel=1e-12)
        if row["kind"] == "base":
            # greedy and untrained: both seeds gave the same answers, one evaluation with its Wilson interval
            assert acc.size == 2 and acc[0] == acc[1]
            assert row["n_seeds"] == "1" and row["seeds"] == "s0" and row["trainable_params"] == ""
            assert (float(row["accuracy_ci95_low"]), float(row["accuracy_ci95_high"])) == pytest.approx(
                wilson_interval(round(mean * SMALL["n_questions"]), SMALL["n_questions"]), rel=1e-12)
            continue
        lo, hi = sps.t.interval(0.95, acc.size - 1, loc=mean, scale=acc.std(ddof=1) / math.sqrt(acc.size))
        lo, hi = max(lo, 0.0), min(hi, 1.0)  # an accuracy's interval is cut to [0, 1]
        assert (float(row["accuracy_ci95_low"]), float(row["accuracy_ci95_high"])) == pytest.approx((lo, hi), rel=1e-9)
        assert row["n_seeds"] == "2" and row["seeds"] == "s0 s1"
        assert float(row["trainable_params"]) == np.mean(arm["params"])
    # the synthetic counts: sum of the ranks x 1000, lora.r on each of the 4 layers for the curve
    assert [float(r["trainable_params"]) for r in rows[1:4]] == [8000.0, 16000.0, 32000.0]


def test_the_capacity_section_prints_the_csv(capacity):
    _, out, rep = capacity
    lines = rep.markdown.split("## Capacity: accuracy against trainable parameters\n", 1)[1].split("\n## ")[0]
    assert f"![fig3]({rp.FIG3})" in lines
    table = [line for line in lines.splitlines() if line.startswith("| synthetic")]
    rows = read_csv(out / "capacity.csv")
    assert len(table) == len(rows)
    for line, row in zip(table, rows):
        cells = line.strip("| ").split(" | ")
        # r is always a column here, though one sweep's Table 1 would not show it
        assert cells[5] == (row["r"] or "-") and cells[6] == row["kind"]
        assert cells[9].startswith(f"{float(row['accuracy_mean']):.4f} [")
    head = (out / rp.FIG3).read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n"


def test_figure3_copes_with_one_parameter_count_and_with_none(capacity, tmp_path):
    sweeps, _, _ = capacity
    jobs, _ = rp.load([sweeps[1]], progress=False)  # proportional and random at one count, and the base model
    points = capacity_points(jobs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # matplotlib's collapsed log axis warned here
        figure3(points, tmp_path / "one.png")
        figure3([p for p in points if p.kind == "base"], tmp_path / "none.png")
    assert (tmp_path / "one.png").stat().st_size > 0 and (tmp_path / "none.png").stat().st_size > 0
