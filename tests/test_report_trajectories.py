"""Rank trajectories of adalora runs (report/trajectories.py): the per-layer ranks read back from
grad_norms.parquet equal the ranks written, other phases and the full-weight rows aside; Figure 4 and
its line, and none of either without an adalora job.

    python -m pytest tests/test_report_trajectories.py -q
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from grpo_rank.allocation.importance import PROJECTIONS
from grpo_rank.analysis import report as rp
from grpo_rank.analysis.report.trajectories import layer_ranks, read_rank_trajectory
from grpo_rank.record.files import GRADS
from tests.synthetic import R, adalora_ranks, make_sweep, write_job

STEPS, LAYERS, MODULES = 6, 4, 3


@pytest.fixture(scope="module")
def adalora(tmp_path_factory):
    """uniform and adalora x 2 seeds, with full-weight rows (their rank column must not count)."""
    root = tmp_path_factory.mktemp("adalora")
    sweep = make_sweep(root / "multirun" / "d" / "t", jobs=4, steps=STEPS, layers=LAYERS, modules=MODULES,
                       n_questions=10, strategies=("uniform", "adalora"), full_weight=True)
    return root, rp.build([sweep], root / "out", use_wandb=False, progress=False)


def written(seed: int) -> np.ndarray:
    """The (steps, layers) per-layer ranks the synthetic adalora job of this seed wrote: its modules' mean."""
    return adalora_ranks(STEPS, LAYERS, MODULES, R, seed).mean(axis=2)


def test_the_trajectory_read_back_equals_the_ranks_written(adalora):
    _, rep = adalora
    found = {j.seed: j.trajectory for j in rep.jobs if j.strategy == "adalora"}
    assert sorted(found) == [0, 1]
    for seed, t in found.items():
        assert t.steps.tolist() == list(range(1, STEPS + 1))
        np.testing.assert_allclose(t.layer_rank, written(seed), rtol=0, atol=1e-6)
        assert not np.allclose(t.layer_rank[1:-1], np.round(t.layer_rank[1:-1]))  # modules differ mid-way
    assert all(j.trajectory is None for j in rep.jobs if j.strategy != "adalora")
    record_final = [j.ranks for j in rep.jobs if j.strategy == "adalora"]
    assert record_final == [written(0)[-1].astype(int).tolist(), written(1)[-1].astype(int).tolist()]


def test_other_phases_are_not_read(tmp_path):
    # a profile phase at the uniform rank before the training phase, and W rows
    write_job(tmp_path / "job", "adalora", 0, steps=STEPS, layers=LAYERS, modules=tuple(PROJECTIONS[:MODULES]),
              n_questions=5, profile_steps=3, full_weight=True)
    t = read_rank_trajectory(tmp_path / "job" / GRADS, "train")
    np.testing.assert_allclose(t.layer_rank, written(0), rtol=0, atol=1e-6)
    assert read_rank_trajectory(tmp_path / "job" / GRADS, "nonexistent") is None


def test_layer_ranks_averages_over_the_modules_recorded():
    # step 1: layer 0 has modules at 4 and 6, layer 1 one at 8; step 2: only layer 0
    t = layer_ranks(np.array([1, 1, 1, 2, 2]), np.array([0, 0, 1, 0, 0]), np.array([4, 6, 8, 2, 3]))
    assert t.steps.tolist() == [1, 2]
    np.testing.assert_array_equal(t.layer_rank, np.array([[5.0, 8.0], [2.5, np.nan]], dtype=np.float32))


def test_figure4_and_its_line(adalora):
    root, rep = adalora
    assert (root / "out" / rp.FIG4).read_bytes()[:4] == b"\x89PNG"
    section = rep.markdown.split("## Rank trajectories\n", 1)[1].split("\n## ")[0]
    mean = (written(0) + written(1)) / 2  # both seeds recorded the same steps: their mean
    line = next(x for x in section.splitlines() if x.startswith("- **adalora/full"))
    first, last = mean[0], mean[-1]
    assert (f"(mean of 2 seeds; steps 1-{STEPS}): per-layer rank at the first step "
            f"{first.min():.2f}-{first.max():.2f}, "
            f"at the last {last.min():.2f}-{last.max():.2f} (min-max over layers; mean {last.mean():.2f}, lora.r {R})"
            ) in line


def test_no_adalora_job_no_figure_and_one_line(adalora, tmp_path):
    root, _ = adalora
    sweep = make_sweep(tmp_path / "multirun" / "d" / "t", jobs=2, steps=2, layers=LAYERS, modules=2, n_questions=5,
                       strategies=("uniform",))
    out = tmp_path / "out"  # holding the adalora report's Figure 4, which must not survive this report
    out.mkdir()
    shutil.copy(root / "out" / rp.FIG4, out / rp.FIG4)
    rep = rp.build([sweep], out, use_wandb=False, progress=False)
    assert not (out / rp.FIG4).exists()
    section = rep.markdown.split("## Rank trajectories\n", 1)[1].split("\n## ")[0]
    assert [x for x in section.splitlines() if x] == [
        "Rank trajectories: none (no job of a strategy whose ranks move, adalora, with training-phase gradient "
        "records)."]


def test_the_definitions_say_how_adalora_differs_from_uniform(adalora):
    _, rep = adalora
    defs = " ".join(rep.markdown.split("## Definitions", 1)[1].split())  # lines rejoined
    for text in ("scaled by alpha / init_r on every module whatever rank it has kept",
                 "with the default init_r = 3/2 r, 2/3 of uniform's scale", "E = 0 with A and B drawn from N(0, 0.02^2)",
                 "uniform: A Kaiming-uniform, B = 0", "first step's A and B gradients are 0",
                 "hold the GRPO loss's gradient alone", "`adalora/orth_reg_grad_norm`"):
        assert text in defs, text
