"""The train stage (train.py) on the tiny model with real TRL and PEFT: every LoRA B matrix moves, no
base weight does, and the gradient-norm profiler's norms are the raw (pre-clip) gradient norms, equal to
norms computed independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from grpo_rank.data import models
from grpo_rank.data.tasks import load_split, prompt_dataset
from grpo_rank.training.train import train
from tests.conftest import TINY, typed

MAX_NORM = 1e-4  # far below the raw norm, so clipping visibly changes the gradients


class IndependentNorms(TrainerCallback):
    """Recomputes every LoRA gradient norm one parameter at a time, with plain torch, and checks after
    the optimizer step that the clip did happen."""

    def __init__(self, model):
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.raw: list[dict[str, float]] = []
        self.clipped_total: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.raw.append({n: float(torch.linalg.vector_norm(p.grad)) for n, p in self.params.items()})

    def on_optimizer_step(self, args, state, control, **kwargs):
        grads = [p.grad for p in self.params.values()]
        self.clipped_total.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = typed(*TINY, f"grpo.max_grad_norm={MAX_NORM}")
    model, tok = models.load(cfg.model, tmp_path_factory.mktemp("cache"), cfg.seed)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = prompt_dataset(load_split(cfg.task, "train"), cfg.task.system_prompt)
    ranks = [8] * 12
    ranks[1], ranks[11] = 12, 4

    checker = {}

    class Late(TrainerCallback):  # the checker needs the PEFT-wrapped model, which exists at train begin
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            checker["cb"] = IndependentNorms(model)

        def on_pre_optimizer_step(self, *a, **k):
            checker["cb"].on_pre_optimizer_step(*a, **k)

        def on_optimizer_step(self, *a, **k):
            checker["cb"].on_optimizer_step(*a, **k)

    out = train(model, tok, data, ranks, cfg, phase="train", steps=2, job_dir=tmp_path_factory.mktemp("job"),
                callbacks=[Late()])
    return out, before, checker["cb"], ranks


def test_every_lora_b_moved_and_no_base_weight_did(trained):
    out, before, _, _ = trained
    b_matrices, b_still_zero, base_changed = 0, [], []
    for name, p in out.model.named_parameters():
        if "lora_B" in name:
            b_matrices += 1
            if not bool(p.detach().abs().sum() > 0):  # B starts at zero: still zero means it never trained
                b_still_zero.append(name)
        elif "lora_" not in name:
            key = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if not torch.equal(p.detach(), before[key]):
                base_changed.append(name)
    assert b_matrices == 12 * 7  # every targeted projection of every layer has its adapter
    assert b_still_zero == [], f"{len(b_still_zero)} LoRA B matrices never moved, e.g. {b_still_zero[:3]}"
    assert base_changed == []


def test_profiler_norms_equal_independent_norms_before_clipping(trained):
    out, _, checker, _ = trained
    g = out.grads
    assert sorted(set(g["step"].tolist())) == [1, 2]
    assert len(checker.raw) == 2
    for step_idx, raw in enumerate(checker.raw, start=1):
        sel = (g["step"] == step_idx) & (g["matrix"] != "W")  # the frozen weights' rows: tests/test_full_weight.py
        assert ((g["step"] == step_idx) & (g["matrix"] == "W")).sum() == 12 * 7  # one per LoRA module
        recorded = dict(zip(zip(g["layer"][sel].tolist(), g["module"][sel].tolist(), g["matrix"][sel].tolist()),
                            g["norm"][sel].tolist()))
        independent = {}
        for name, v in raw.items():
            layer = int(name.split(".layers.")[1].split(".")[0])
            module = name.split(".lora_")[0].rsplit(".", 1)[1]
            matrix = name.split(".lora_")[1][0]
            independent[(layer, module, matrix)] = v
        assert recorded.keys() == independent.keys()
        for k in recorded:
            assert recorded[k] == pytest.approx(independent[k], rel=1e-5, abs=1e-12), k
        total_raw = np.sqrt(sum(v ** 2 for v in independent.values()))
        assert total_raw > 10 * MAX_NORM, "the raw gradient must be large enough for the clip to bite"
    # the optimizer saw clipped gradients: the clip was applied after the profiler read them
    assert all(t <= MAX_NORM * 1.01 for t in checker.clipped_total)


def test_a_first_step_has_zero_grad_for_a_since_b_starts_at_zero(trained):
    out, _, _, _ = trained
    g = out.grads
    first_a = g["norm"][(g["step"] == 1) & (g["matrix"] == "A")]
    first_b = g["norm"][(g["step"] == 1) & (g["matrix"] == "B")]
    assert np.all(first_a == 0) and np.any(first_b > 0)


def test_records_carry_rank_and_scaling(trained):
    out, _, _, ranks = trained
    g = out.grads
    for layer, r in enumerate(ranks):
        sel = g["layer"] == layer
        assert set(g["rank"][sel].tolist()) == {r}
        assert np.allclose(g["scaling"][sel], 16.0 / r)  # fixed alpha=16: scaling alpha/r moves with rank


def test_learning_signal_was_present(trained):
    out, _, _, _ = trained
    assert out.nonzero_spread_fraction is not None and out.nonzero_spread_fraction > 0
