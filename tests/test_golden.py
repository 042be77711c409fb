"""Behaviour kept across refactors: the tiny-model sweep (uniform, proportional, random; seed 0) gives the
same ranks, parameter counts, gradient records, training rewards, replies and accuracies as the records
committed in tests/golden/tiny_sweep.json, which the code before the first redesign (typed records, a module per stage) produced.

One thread per process, as when the golden records were made: thread count changes float summation order.
Where a later change alters a result on purpose, the golden entry is regenerated in the same commit
and its `changed_by` says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from grpo_rank.record.files import read_grad_records, read_jsonl
from grpo_rank.record.result import read_result
from tests.conftest import TINY, TINY_STRATEGIES, jobs_by_arm

GOLDEN = json.loads((Path(__file__).parent / "golden" / "tiny_sweep.json").read_text())
STRATEGIES = tuple(GOLDEN["jobs"])


@pytest.fixture(scope="module")
def sweep(tiny_sweep):
    """The seed-0 jobs of the session's tiny sweep: the golden command's overrides, one thread each."""
    assert GOLDEN["command_overrides"] == [*TINY, "seed=0"] and set(STRATEGIES) == set(TINY_STRATEGIES)
    return {strategy: (folder, read_result(folder)) for (strategy, _, seed), folder in jobs_by_arm(tiny_sweep[0]).items()
            if seed == 0}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_ranks_params_accuracy(sweep, strategy):
    gold = GOLDEN["jobs"][strategy]
    folder, res = sweep[strategy]
    assert res.allocation.ranks == gold["ranks"]
    if gold["importance"] is None:
        assert res.allocation.importance is None
    else:
        np.testing.assert_allclose(res.allocation.importance, gold["importance"], rtol=1e-6)
    assert (res.params.planned, res.params.built) == (gold["params_planned"], gold["params_built"])
    assert (res.eval.accuracy, res.eval.correct, res.eval.n) == (gold["accuracy"], gold["correct"], gold["n"])
    assert [o["reply"] for o in read_jsonl(folder / "eval_outcomes.jsonl")] == gold["replies"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_gradient_records_and_rewards(sweep, strategy):
    gold = GOLDEN["jobs"][strategy]
    folder, _ = sweep[strategy]
    grads = read_grad_records(folder / "grad_norms.parquet")
    # the frozen weights' gradient rows (matrix "W", profile.full_weight) came later: LoRA rows are compared
    lora_rows = np.isin(grads["matrix"], ["A", "B"])
    assert (~lora_rows).sum() == lora_rows.sum() // 2  # one W row per module, beside its A and B
    grads = {c: v[lora_rows] for c, v in grads.items()}
    for col in ("phase", "step", "layer", "module", "matrix", "rank"):
        assert grads[col].tolist() == gold["grads"][col], col
    np.testing.assert_allclose(grads["scaling"], gold["grads"]["scaling"], rtol=1e-6)
    np.testing.assert_allclose(grads["norm"], gold["grads"]["norm"], rtol=1e-4, atol=1e-7)
    rewards = [[r["phase"], r["step"], r.get("reward")] for r in read_jsonl(folder / "train_log.jsonl")]
    assert [r[:2] for r in rewards] == [g[:2] for g in gold["rewards"]]
    np.testing.assert_allclose([r[2] for r in rewards], [g[2] for g in gold["rewards"]], rtol=1e-6)
