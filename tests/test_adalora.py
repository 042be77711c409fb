"""strategy=adalora (adalora.py) on the tiny model with real TRL and PEFT: the ranks move during GRPO
training and end exactly on the budget, the orthogonal regulariser reaches the gradient the optimizer sees
but not the gradient records (its norm is logged apart), and the rank trajectory is in the records."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from grpo_rank.config.schema import ConfigError
from grpo_rank.config.validate import validate
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = adapter.load(base, job_dir, result.adapter)
    # PEFT's false "rank_pattern keys ... ignored" (the reload below shows they were applied) is not shown
    assert not [w for w in caught if "rank_pattern keys did not match" in str(w.message)]
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
    """Per step: the LoRA A/B gradients the profiler records (this callback runs after it, before the
    regulariser), the independently computed gradient of PEFT's orthogonal regulariser at the same
    parameters, and the gradients the optimizer stepped with (no clip in these runs)."""

    def __init__(self):
        self.recorded, self.penalty, self.stepped = [], [], []

    @staticmethod
    def _params(model):
        return {n: p for n, p in model.named_parameters() if p.requires_grad and ("lora_A" in n or "lora_B" in n)}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        params = self._params(model)
        self.recorded.append({n: p.grad.detach().clone() for n, p in params.items()})
        terms = []
        for n, p in params.items():
            m = p @ p.T if "lora_A" in n else p.T @ p
            terms.append(torch.sqrt(((m - torch.eye(m.shape[0])) ** 2).sum()))
        with torch.enable_grad():
            g = torch.autograd.grad(torch.stack(terms).mean(), list(params.values()))
        self.penalty.append({n: gi.detach() for n, gi in zip(params, g)})

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):  # before the gradients are zeroed
        self.stepped.append({n: p.grad.detach().clone() for n, p in self._params(model).items()})


def _run(weight: float, tmp_path, steps: int = 2):
    cfg = typed(*ADALORA, f"grpo.steps={steps}", f"adalora.orth_reg_weight={weight}", "grpo.max_grad_norm=0")
    model, tok = models.load(cfg.model, cfg.cache_dir, cfg.seed)
    cap = CaptureGrads()
    job_dir = tmp_path / str(weight)
    job_dir.mkdir()
    out = train(model, tok, training_data(cfg), [8] * 12, cfg, phase="train", steps=steps, job_dir=job_dir,
                callbacks=[cap])
    return cap, out


def test_the_orthogonal_regulariser_is_stepped_with_but_not_recorded(tmp_path, cache_dir):
    cap, out = _run(0.5, tmp_path)
    assert len(cap.recorded) == len(cap.stepped) == 2 and len(cap.recorded[0]) == 2 * 12 * 7
    # PEFT starts E at 0: the GRPO loss gives A and B no gradient at the first step, only the regulariser does
    assert all(float(g.abs().max()) == 0 for g in cap.recorded[0].values())
    assert any(float(g.abs().max()) > 0 for g in cap.recorded[1].values())  # E has moved: now the loss does
    for recorded, penalty, stepped in zip(cap.recorded, cap.penalty, cap.stepped):
        moved = max(float((stepped[n] - recorded[n]).abs().max()) for n in recorded)
        diff = max(float((stepped[n] - recorded[n] - 0.5 * penalty[n]).abs().max()) for n in recorded)
        assert moved > 1e-5 and diff < 1e-4 * moved, (diff, moved)  # the optimizer steps with 0.5 x its gradient
    # the gradient records hold the loss's gradient alone: step 1 all zero, step 2 the recorded norms
    lora = np.isin(out.grads["matrix"], ["A", "B"])
    assert np.all(out.grads["norm"][lora & (out.grads["step"] == 1)] == 0)
    at2 = out.grads["norm"][lora & (out.grads["step"] == 2)]
    assert np.allclose(np.sort(at2), np.sort([float(g.norm()) for g in cap.recorded[1].values()]), rtol=1e-5)
    # ... and the regulariser's value and weighted gradient norm are in the train log, step by step
    logged = [r for r in out.log_rows if "adalora/orth_reg_grad_norm" in r]
    assert [r["step"] for r in logged] == [1, 2]
    for row, penalty in zip(logged, cap.penalty):
        norm = float(torch.sqrt(sum((0.5 * g).pow(2).sum() for g in penalty.values())))
        assert row["adalora/orth_reg_grad_norm"] == pytest.approx(norm, rel=1e-5)
        assert row["adalora/orth_reg"] > 0


def test_the_regulariser_weight_changes_no_first_step_record(tmp_path, cache_dir):
    """At step 1 both runs have the same parameters: their records agree whatever the regulariser's weight
    (and step 2's, after a step with and one without it, do not)."""
    _, plain = _run(0.0, tmp_path)
    _, regularised = _run(0.5, tmp_path)
    first = plain.grads["step"] == 1
    assert np.array_equal(plain.grads["norm"][first], regularised.grads["norm"][first])
    assert not np.array_equal(plain.grads["norm"][~first], regularised.grads["norm"][~first])
    assert not any("adalora/orth_reg" in r for r in plain.log_rows)


@pytest.mark.parametrize("override, field", [("lora.alpha_mode=rslora", "lora.alpha_mode"),
                                             ("adalora.warmup_fraction=0.8", "adalora.final_fraction"),
                                             ("adalora.init_r=4", "adalora.init_r"),
                                             ("adalora.init_r=8", "adalora.init_r"),  # = lora.r: nothing to mask
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
