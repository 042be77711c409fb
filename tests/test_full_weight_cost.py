"""What the full-weight signal costs, kept low without changing what it measures (training/fullweight.py):
fewer rows in its product (a group's shared prompt merged), no buffer for one micro-batch,
no input kept past what gradient checkpointing keeps, bfloat16 accumulation against float32, and the rule
that turns it off where it would not fit the device (runtime/memory.py, pipeline/preflight.py).

    OMP_NUM_THREADS=1 python -m pytest tests/test_full_weight_cost.py -q
"""

from __future__ import annotations

import gc
import types
import weakref

import numpy as np
import pytest
import torch

from grpo_rank.allocation import importance
from grpo_rank.pipeline.preflight import full_weight_fits, model_shape
from grpo_rank.runtime.memory import STUDY_MODELS, Dims, signal_bytes
from grpo_rank.training import fullweight
from grpo_rank.training.fullweight import compact_rows
from grpo_rank.training.gradnorm import GradNormProfiler
from tests.conftest import typed
from tests.test_full_weight import ALL7, PLAN, autograd_w_norms, batch, lora_layers, peft_model, sites

PROMPT, COMPLETION, GROUPS, COPIES = 40, 12, 2, 4


def grpo_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """As TRL builds one: 2 prompts (left-padded to one length) x 4 completions each, shuffled."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k in range(GROUPS):
        prompt = torch.randint(3, 467, (PROMPT - 3 * k,), generator=g)
        for _ in range(COPIES):
            rows.append(torch.cat([torch.zeros(3 * k, dtype=torch.long), prompt,
                                   torch.randint(3, 467, (COMPLETION,), generator=g)]))
    ids = torch.stack(rows)[torch.randperm(GROUPS * COPIES, generator=g)]
    return ids, (ids != 0).long()


def completion_loss(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask).logits[:, -COMPLETION - 1:-1]
    return -logits.log_softmax(-1).gather(-1, ids[:, -COMPLETION:, None]).mean()


def autograd_norms(ids, mask) -> np.ndarray:
    """(layers, modules) ||dL/dW|| of the completion loss, by autograd on the plain model (B = 0 at init)."""
    from grpo_rank.allocation import lora
    from grpo_rank.data import models
    from tests.test_full_weight import CFG

    model, _ = models.load(CFG, "/nonexistent", seed=0)
    model.requires_grad_(False)
    modules = dict(model.named_modules())
    sites = lora.find_sites(model, ALL7)
    for s in sites:
        modules[s.name].weight.requires_grad_(True)
    completion_loss(model, ids, mask).backward()
    out = np.zeros((12, len(ALL7)))
    for s in sites:
        out[s.layer, ALL7.index(s.proj)] = modules[s.name].weight.grad.norm().item()
    return out


def step_norms(profiler, model, *batches, step: int = 0) -> np.ndarray:
    for ids, mask in batches:
        completion_loss(model, ids, mask).backward()
    profiler.on_pre_optimizer_step(None, types.SimpleNamespace(global_step=step), None)
    profiler.flush()
    model.zero_grad()
    return importance.grad_cube(profiler.columns(), "profile", "full_weight").cube[-1]


def test_compact_rows_is_the_same_product_with_fewer_rows():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g)
    x = torch.cat([x, x[1:3], x[1:2], torch.zeros(2, 5)])  # rows 6, 7, 8 repeat rows 1, 2, 1; 10 repeats 9
    grad = torch.randn(11, 4, generator=g)
    merged_g, merged_x = compact_rows(grad, x)
    assert merged_x.shape[0] == 7  # 11 rows, 4 repeats merged
    torch.testing.assert_close(merged_g.T @ merged_x, grad.T @ x, rtol=1e-6, atol=1e-6)
    again = compact_rows(grad, x)
    assert all(torch.equal(a, b) for a, b in zip(again, (merged_g, merged_x)))  # the same every run
    # rows that differ in one bit stay apart
    near = x.clone()
    near[7] = torch.nextafter(near[7], torch.full_like(near[7], 9.0))
    assert compact_rows(grad, near)[1].shape[0] == 8


def test_a_grpo_batch_merges_the_shared_prompt_and_gives_autograds_norms(monkeypatch):
    """On a GRPO-shaped batch the product runs on well under half the rows (one copy of each prompt), and
    the norms are still autograd's dL/dW, buffered or not."""
    ids, mask = grpo_batch()
    expected = autograd_norms(ids, mask)
    seen = []

    def counting(g, x, plan=None):
        out = compact_rows(g, x, plan)
        seen.append((g.shape[0], out[1].shape[0]))
        return out

    monkeypatch.setattr(fullweight, "compact_rows", counting)
    for buffered in (True, False):
        model = peft_model(PLAN)
        profiler = GradNormProfiler("profile", sites(), full_weight=True)
        profiler.attach(model)
        profiler.full_weight.buffered = buffered
        np.testing.assert_allclose(step_norms(profiler, model, (ids, mask)), expected, rtol=1e-5)
    rows, kept = map(sum, zip(*seen))
    # at least every prompt position (its left padding too) of each group's copies 2..4 merged
    repeats = (COPIES - 1) * GROUPS * PROMPT
    assert kept / rows <= (mask.numel() - repeats) / mask.numel() < 0.45


def test_one_micro_batch_keeps_no_buffer_and_refuses_a_second():
    ids, mask = grpo_batch(1)
    model = peft_model(PLAN)
    profiler = GradNormProfiler("profile", sites(), full_weight=True)
    profiler.attach(model)
    args = types.SimpleNamespace(gradient_accumulation_steps=1)
    profiler.on_train_begin(args, None, None)
    assert profiler.full_weight.buffered is False
    completion_loss(model, ids, mask).backward()
    assert profiler.full_weight.sums == {}  # norms taken in the backward
    profiler.on_pre_optimizer_step(None, types.SimpleNamespace(global_step=0), None)
    model.zero_grad()
    completion_loss(model, ids, mask).backward()
    with pytest.raises(RuntimeError, match="second backward in one optimizer step"):
        completion_loss(model, ids, mask).backward()
    profiler.on_train_begin(types.SimpleNamespace(gradient_accumulation_steps=2), None, None)
    assert profiler.full_weight.buffered is True


def test_under_checkpointing_no_input_outlives_its_layers_forward():
    """Non-reentrant gradient checkpointing frees a layer's activations after its forward; the signal keeps
    its input X through autograd's saved tensors, so X is freed too (and recomputed for the backward)."""
    model = peft_model(PLAN)
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    profiler = GradNormProfiler("profile", sites(), full_weight=True)
    profiler.attach(model)
    refs = []
    layer = next(iter(lora_layers(model).values()))
    layer.register_forward_pre_hook(lambda module, inputs: refs.append(weakref.ref(inputs[0])))
    ids = batch(0)
    loss = model(input_ids=ids, labels=ids).loss
    gc.collect()
    assert refs and refs[0]() is None  # the first forward's input is gone before the backward
    loss.backward()
    profiler.on_pre_optimizer_step(None, types.SimpleNamespace(global_step=0), None)
    profiler.flush()
    got = importance.grad_cube(profiler.columns(), "profile", "full_weight").cube[0]
    np.testing.assert_allclose(got, autograd_w_norms(ids), rtol=1e-5)


def test_bfloat16_accumulation_is_within_a_percent_of_float32():
    """bfloat16 weights accumulate dL/dW over micro-batches in bfloat16 (half the buffer); over 4
    micro-batches the norms stay within 1% of a float32 buffer's on the same bfloat16 products.
    Measured here: largest relative difference ~0.1-0.3%."""
    model = peft_model(PLAN).to(torch.bfloat16)
    batches = [grpo_batch(seed) for seed in range(4)]
    norms = {}
    for name, dtype in (("bf16", None), ("fp32", torch.float32)):
        profiler = GradNormProfiler("profile", sites(), full_weight=True)
        profiler.attach(model)
        if dtype is not None:
            profiler.full_weight.dtype = dtype
        norms[name] = step_norms(profiler, model, *batches)
        profiler.on_train_end(None, types.SimpleNamespace(global_step=1), None)
    assert next(iter(profiler.full_weight.layers)).base_layer.weight.dtype == torch.bfloat16
    rel = np.abs(norms["bf16"] / norms["fp32"] - 1)
    assert (norms["fp32"] > 0).all() and rel.max() < 0.01, rel.max()


def test_the_device_rule_turns_the_signal_off_only_where_it_would_not_fit():
    cfg = typed("model=tiny")
    shape = model_shape(cfg)
    dims = Dims.of(shape)
    weights = dims.params() * 4
    assert full_weight_fits(cfg, shape, gpus=0, memory=None) is None  # unknown memory: left on
    assert full_weight_fits(cfg, shape, gpus=0, memory=2**40) is None
    line = full_weight_fits(cfg, shape, gpus=0, memory=weights)
    assert line and "\n" not in line and "GiB" in line
    off = typed("model=tiny", "profile.full_weight=false")
    assert full_weight_fits(off, shape, gpus=0, memory=1) is None
    # one micro-batch needs one projection's product, accumulation the whole buffer
    total, largest = dims.targeted(ALL7)
    assert signal_bytes(dims, ALL7, "float32", buffered=False) == largest * 4
    assert signal_bytes(dims, ALL7, "bfloat16", buffered=True) == total * 2
    assert signal_bytes(dims, ALL7, "float16", buffered=True) == total * 4


def test_model_shapes_read_without_weights_match_the_models():
    """The GGUF header's shape is SmolLM2's config; the study's models' targeted counts are exact."""
    shape = model_shape(typed())
    assert {k: shape[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                                  "num_key_value_heads", "vocab_size")} == {
        "num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
        "num_key_value_heads": 3, "vocab_size": 49152}
    # Qwen2.5-1.5B at LoRA r=32 on all 7 projections: the study's 36,929,536 trainable parameters
    q = STUDY_MODELS["Qwen2.5-1.5B"]
    lora = sum(32 * (fan_in + fan_out) for fan_in, fan_out in (
        (1536, 1536), (1536, 256), (1536, 256), (1536, 1536), (1536, 8960), (1536, 8960), (8960, 1536)))
    assert lora * q.num_hidden_layers == 36_929_536
    assert q.targeted(ALL7)[0] == 28 * (2 * 1536 * 1536 + 2 * 256 * 1536 + 3 * 8960 * 1536)
