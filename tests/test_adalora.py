"""strategy=adalora (adalora.py) on the tiny model with real TRL and PEFT: the ranks move during GRPO
training and end exactly on the budget, the orthogonal regulariser reaches the gradient the profiler and
the optimizer see, and the rank trajectory is in the records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from grpo_rank.config.schema import ConfigError, validate
from grpo_rank.data import models
from grpo_rank.pipeline.job import run_job, training_data
from grpo_rank.record.files import GRADS, read_grad_records, read_jsonl
from grpo_rank.training import adalora, adapter
from grpo_rank.training.train import train
from tests.conftest import TINY, typed, wandb_records

ADALORA = (*TINY, "strategy=adalora", "grpo.steps=4", "adalora.warmup_fraction=0", "adalora.final_fraction=0.25",
           "grpo.save_steps=0", "eval.n=4")


@pytest.fixture(scope="module")
def job(tmp_path_factory, cache_dir):
    job_dir = tmp_path_factory.mktemp("adalora")
    result = run_job(typed(*ADALORA, "tracking.mode=offline", f"profile.cache_dir={job_dir}/profiles"), job_dir)
    return result, read_grad_records(job_dir / GRADS), job_dir


def test_ranks_move_during_training_and_end_on_the_budget(job):
    result, grads, _ = job
    assert result.status == "ok"
    info = result.adaptive
    # budget: lora.r=8 on each of 12 layers, for each of the 7 projections
    assert info.target_total == 8 * 12 * 7 and info.final_total == info.target_total
    assert info.init_r == 12 and (info.tinit, info.tfinal) == (0, 1)
    finals = [r for ranks in info.final_module_ranks.values() for r in ranks]
    assert sum(finals) == info.target_total and len(set(finals)) > 1  # not every module kept the same rank
    assert info.final_layer_ranks == pytest.approx([sum(info.final_module_ranks[m][layer] for m in
                                                        info.final_module_ranks) / 7 for layer in range(12)])
    # the trajectory: every module at init_r at step 1, then masked down; from the final step on the budget
    b = grads["matrix"] == "B"
    per_step = {s: grads["rank"][b & (grads["step"] == s)] for s in (1, 2, 3, 4)}
    assert np.all(per_step[1] == 12)
    assert per_step[2].sum() < 12 * 84 and per_step[4].sum() == info.target_total
    assert per_step[2].sum() >= per_step[3].sum() >= per_step[4].sum()


def test_the_kept_adalora_adapter_reloads_into_the_evaluated_replies(job):
    """PEFT rebuilds AdaLoRA's final, uneven ranks from the saved adapter_config.json (its rank_pattern masks)."""
    from grpo_rank.data.tasks import load_split
    from grpo_rank.evaluation.evaluate import evaluate

    result, _, job_dir = job
    cfg = typed(*ADALORA)
    assert result.adapter.kind == "ADALORA"
    base, tokenizer = models.load(cfg.model, cfg.cache_dir, cfg.seed)
    model = adapter.load(base, job_dir, result.adapter)
    ev = evaluate(model, tokenizer, load_split(cfg.task, "test")[:4], cfg.task.system_prompt, batch_size=8,
                  max_new_tokens=cfg.eval.max_new_tokens, few_shot=cfg.task.few_shot, progress=False)
    assert [o["reply"] for o in ev.outcomes] == [o["reply"] for o in read_jsonl(job_dir / "eval_outcomes.jsonl")]


def test_the_planned_parameters_are_what_peft_built(job):
    result, _, _ = job
    # A (r x in), B (out x r) and E (r) at init_r on every module: the closed form adalora.planned_params
    assert result.params.built == result.params.planned
    assert result.allocation.ranks == [8] * 12  # the budget the ranks end on


def test_the_rank_trajectory_streams_to_wandb_on_the_training_axis(job):
    result, grads, job_dir = job
    recs = wandb_records(job_dir)
    axes = {m["metric"].get("glob_name"): m["metric"].get("step_metric") for m in recs if m.get("type") == "metric"}
    assert axes["rank/*"] == "train/global_step"
    rows = [r["history"]["item"] for r in recs if r.get("type") == "history" and "rank/layer_00" in r["history"]["item"]]
    assert [r["train/global_step"] for r in rows] == [1, 2, 3, 4]
    b = grads["matrix"] == "B"
    for r in rows:  # each layer's mean module rank at that step, as the gradient records hold it
        at = b & (grads["step"] == r["train/global_step"])
        for layer in range(12):
            assert r[f"rank/layer_{layer:02d}"] == pytest.approx(grads["rank"][at & (grads["layer"] == layer)].mean())


class CaptureGrads(TrainerCallback):
    """The LoRA gradients the profiler sees at the first step (runs after it), and the independently
    computed gradient of PEFT's orthogonal regulariser at the same parameters."""

    def __init__(self):
        self.grads, self.penalty = {}, {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads:
            return
        params = {n: p for n, p in model.named_parameters() if p.requires_grad and ("lora_A" in n or "lora_B" in n)}
        self.grads = {n: p.grad.detach().clone() for n, p in params.items()}
        terms = []
        for n, p in params.items():
            m = p @ p.T if "lora_A" in n else p.T @ p
            terms.append(torch.sqrt(((m - torch.eye(m.shape[0])) ** 2).sum()))
        with torch.enable_grad():
            g = torch.autograd.grad(torch.stack(terms).mean(), list(params.values()))
        self.penalty = {n: gi.detach() for n, gi in zip(params, g)}


def _first_step(weight: float, tmp_path) -> CaptureGrads:
    cfg = typed(*ADALORA, "grpo.steps=2", f"adalora.orth_reg_weight={weight}")
    model, tok = models.load(cfg.model, cfg.cache_dir, cfg.seed)
    cap = CaptureGrads()
    job_dir = tmp_path / str(weight)
    job_dir.mkdir()
    train(model, tok, training_data(cfg), [8] * 12, cfg, phase="train", steps=2, job_dir=job_dir, callbacks=[cap])
    return cap


def test_the_orthogonal_regulariser_is_in_the_gradient(tmp_path, cache_dir):
    plain, regularised = _first_step(0.0, tmp_path), _first_step(0.5, tmp_path)
    assert plain.grads.keys() == regularised.grads.keys() and len(plain.grads) == 2 * 12 * 7
    diff = max(float((regularised.grads[n] - plain.grads[n] - 0.5 * plain.penalty[n]).abs().max())
               for n in plain.grads)
    moved = max(float((regularised.grads[n] - plain.grads[n]).abs().max()) for n in plain.grads)
    assert moved > 1e-5, moved  # A ~ N(0, 0.02) at init: the regulariser's gradient is small, not zero
    assert diff < 1e-3 * moved, (diff, moved)


@pytest.mark.parametrize("override, field", [("lora.alpha_mode=rslora", "lora.alpha_mode"),
                                             ("adalora.warmup_fraction=0.8", "adalora.final_fraction"),
                                             ("adalora.init_r=4", "adalora.init_r"),
                                             ("grpo.steps=1", "grpo.steps")])
def test_bad_adalora_settings_are_one_line_errors(override, field):
    with pytest.raises(ConfigError, match=rf"^{field}="):
        validate(typed(*ADALORA, override))


class StopAt(TrainerCallback):
    """Ends the run with an error once `step` is done: a job that dies after its checkpoint."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError("killed")


@pytest.mark.slow  # three 4-step runs: ~80 s
def test_a_resumed_adalora_run_with_per_reward_records_equals_an_uninterrupted_one(tmp_path, cache_dir):
    """The allocator's state and the per-reward rows travel with the checkpoint."""
    cfg = typed(*ADALORA, "grpo.save_steps=2", "profile.per_reward=true", "grpo.beta=0.05", "tracking.mode=disabled")

    def run(job_dir, callbacks=()):
        job_dir.mkdir(exist_ok=True)
        model, tok = models.load(cfg.model, cfg.cache_dir, cfg.seed)
        return train(model, tok, training_data(cfg), [8] * 12, cfg, phase="train", steps=4, job_dir=job_dir,
                     callbacks=callbacks)

    whole = run(tmp_path / "whole")
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "killed", [StopAt(3)])
    resumed = run(tmp_path / "killed")
    assert resumed.resumed_from == 2
    for key in ("step", "rank", "norm"):
        assert np.array_equal(resumed.grads[key], whole.grads[key]), key
    for key in ("step", "reward", "norm", "rank"):
        assert np.array_equal(resumed.reward_grads[key], whole.reward_grads[key]), key
    assert adalora.module_ranks(resumed.model) == adalora.module_ranks(whole.model)
