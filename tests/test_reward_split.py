"""profile.per_reward (reward_split.py): each reward's share of the GRPO gradient, exact by construction.
Known answers for the advantage split; on the tiny model with real TRL, the per-reward and KL gradients
add up to the step's gradient also with LoRA dropout on (each extra pass replays its micro-batch's random
state), recording them changes nothing else the job computes, and a step that does not add up stops the job."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from grpo_rank.config.schema import ConfigError
from grpo_rank.config.validate import check_per_reward, validate
from grpo_rank.data import models
from grpo_rank.pipeline.job import run_job, training_data
from grpo_rank.record.files import GRADS, REWARD_COLUMNS, REWARD_GRADS, TRAIN_LOG, read_grad_records, read_jsonl
from grpo_rank.record.result import read_result
from grpo_rank.training import reward_split
from grpo_rank.training.reward_split import KL, InexactSplit, component_advantages
from grpo_rank.training.train import train
from tests.conftest import TINY, typed

SPLIT = (*TINY, "grpo.beta=0.05", "grpo.grad_accum=2", "grpo.per_device_batch_size=4", "grpo.save_steps=0",
         "eval.n=4", "tracking.mode=disabled")


def test_shares_of_a_group_by_hand():
    # one group of 4 completions, rewards (format, correctness), weights 0.5 and 1
    r = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0]])
    got = component_advantages(r, [0.5, 1.0], 4, "none")
    assert torch.allclose(got, torch.tensor([[0.25, -0.5], [0.25, 0.5], [-0.25, -0.5], [-0.25, 0.5]]))
    combined = torch.tensor([0.5, 1.5, 0.0, 1.0])
    std = combined.std()  # TRL's nanstd is the sample (n-1) std
    scaled = component_advantages(r, [0.5, 1.0], 4, "group")
    assert torch.allclose(scaled, got / (std + 1e-4))
    assert torch.allclose(scaled.sum(1), (combined - combined.mean()) / (std + 1e-4))


def test_groups_are_scaled_by_their_own_std():
    r = torch.tensor([[1.0], [0.0], [3.0], [1.0]])  # two groups of 2, one reward
    got = component_advantages(r, [2.0], 2, "group")
    s1, s2 = torch.tensor([2.0, 0.0]).std(), torch.tensor([6.0, 2.0]).std()
    assert torch.allclose(got[:, 0], torch.tensor([1 / (s1 + 1e-4), -1 / (s1 + 1e-4), 2 / (s2 + 1e-4), -2 / (s2 + 1e-4)]))


class Capture(TrainerCallback):
    """After the profiler: the step's own gradient, and the split's component gradients of that step."""

    def __init__(self, splitter_of):
        self.splitter_of, self.steps = splitter_of, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        s = self.splitter_of()
        actual = [p.grad.detach().clone() for p in s.params]
        self.steps.append((actual, {k: [g.clone() for g in v] for k, v in s.last_components.items()}))


@pytest.mark.parametrize("dropout", [0.05, 0.3])  # the study's LoRA dropout (an assumption), and a large one
def test_the_parts_add_up_to_the_steps_gradient_with_dropout_on(dropout, tmp_path, cache_dir, monkeypatch):
    made = []

    class Kept(reward_split.RewardGradients):  # the real splitter, kept where the test can read it
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(reward_split, "RewardGradients", Kept)
    cfg = typed(*SPLIT, "profile.per_reward=true", "grpo.steps=2", f"lora.dropout={dropout}")
    model, tok = models.load(cfg.model, cfg.cache_dir, cfg.seed)
    cap = Capture(lambda: made[0])
    out = train(model, tok, training_data(cfg), [8] * 12, cfg, phase="train", steps=2, job_dir=tmp_path,
                callbacks=[cap])
    assert len(cap.steps) == 2
    for actual, parts in cap.steps:
        assert set(parts) == {"format_partial", "correctness_partial", KL}
        for i, a in enumerate(actual):
            rebuilt = sum(parts[k][i] for k in parts)
            assert torch.allclose(rebuilt, a, rtol=1e-5, atol=1e-6 * float(a.abs().max()) + 1e-12)
        assert any(float(g.abs().max()) > 0 for g in parts["format_partial"])  # a reward that drives something
    # relative to ||G||; without the replay the extra passes draw other masks: 0.19 at dropout 0.05, 0.55 at 0.3
    assert out.reward_residual is not None and out.reward_residual < 1e-6


@pytest.fixture(scope="module")
def pair(tmp_path_factory, cache_dir):
    """The same job with and without the split."""
    out = {}
    for flag in ("true", "false"):
        job_dir = tmp_path_factory.mktemp(f"split-{flag}")
        result = run_job(typed(*SPLIT, "lora.dropout=0.05", f"profile.per_reward={flag}",
                               f"profile.cache_dir={job_dir}/p"), job_dir)
        out[flag] = (result, job_dir)
    return out


def test_the_split_is_recorded_and_changes_nothing_else(pair):
    (with_split, a), (without, b) = pair["true"], pair["false"]
    assert with_split.status == without.status == "ok"
    assert with_split.train.reward_split_residual < 1e-6 and without.train.reward_split_residual is None
    rows = read_grad_records(a / REWARD_GRADS)
    assert set(rows) == set(REWARD_COLUMNS) and not (b / REWARD_GRADS).exists()
    assert sorted(set(rows["reward"].tolist())) == ["correctness_partial", "format_partial", KL]
    assert sorted(set(rows["step"].tolist())) == [1, 2] and set(rows["phase"].tolist()) == {"train"}
    ga, gb = read_grad_records(a / GRADS), read_grad_records(b / GRADS)
    # with dropout on: the extra passes touch neither the gradient nor the random streams the step goes on with
    assert np.array_equal(ga["norm"], gb["norm"]) and np.array_equal(ga["step"], gb["step"])
    strip = lambda rows: [{k: v for k, v in r.items() if "time" not in k} for r in rows]  # noqa: E731
    assert strip(read_jsonl(a / TRAIN_LOG)) == strip(read_jsonl(b / TRAIN_LOG))  # nor TRL's logged metrics
    assert with_split.eval.accuracy == without.eval.accuracy


def test_the_split_needs_grpos_advantages():
    with pytest.raises(ConfigError, match=r"^profile.per_reward="):
        validate(typed(*SPLIT, "profile.per_reward=true", "algorithm=sft"))


def test_a_step_that_does_not_add_up_stops_the_job(tmp_path, cache_dir, monkeypatch):
    """Without the replay (our own set_rng_state made a no-op) dropout draws other masks in the extra passes:
    the job fails at that step, with the residual in its one-line error, instead of recording the split."""
    monkeypatch.setattr(reward_split, "set_rng_state", lambda state: None)
    cfg = typed(*SPLIT, "profile.per_reward=true", "lora.dropout=0.3", "grpo.steps=1", "grpo.beta=0",
                f"profile.cache_dir={tmp_path}/p")
    with pytest.raises(InexactSplit, match="relative residual"):
        run_job(cfg, tmp_path)
    result = read_result(tmp_path)
    assert result.status == "failed" and result.error.startswith("InexactSplit: profile.per_reward: at train step 1")
    assert "profile.per_reward_tolerance=0.0001" in result.error and result.eval is None


def test_vllm_with_dropout_is_refused_before_anything_loads():
    with pytest.raises(ConfigError, match=r"^profile.per_reward=True: with vLLM generation and lora.dropout=0.05"):
        validate(typed(*SPLIT, "profile.per_reward=true", "lora.dropout=0.05", "grpo.use_vllm=true"))
    auto = typed(*SPLIT, "profile.per_reward=true", "lora.dropout=0.05")  # grpo.use_vllm=null: known at the job's start
    validate(auto)
    with pytest.raises(ConfigError, match="set lora.dropout=0, or grpo.use_vllm=false"):
        check_per_reward(auto, vllm=True)
    check_per_reward(auto, vllm=False)
    check_per_reward(typed(*SPLIT, "profile.per_reward=true", "lora.dropout=0"), vllm=True)
