"""Any causal LM: the sites LoRA goes to (allocation/sites.py) on tiny random models of each family built
in-process from transformers configs (2 layers), the dry run's planned count against PEFT's built count
and against closed forms from the dimensions, the one-line refusals (before any weights load), and short
GRPO jobs with a proportional allocation end to end (Phi-3, Gemma 3, Qwen3-MoE, and GPT-2 through
`model=hf model.path=<folder>`).

    OMP_NUM_THREADS=1 python -m pytest tests/test_any_model.py -q
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from grpo_rank.allocation import lora
from grpo_rank.allocation.sites import LAYER_PATTERN, SiteError, find_sites, module_types
from grpo_rank.config.schema import ModelConfig, TinyModelConfig
from grpo_rank.data import models
from grpo_rank.errors import InputError, error_line
from grpo_rank.pipeline.job import run_job
from grpo_rank.record.files import GRADS, read_grad_records
from tests.conftest import ROOT, compose, run_cli, typed

ATTENTION = "lora.target_modules=[q_proj,k_proj,v_proj,o_proj]"
ALL_LINEAR = "lora.target_modules=[all-linear]"
# arch -> (targets, LoRA parameters per unit of rank in one layer, from the tiny dimensions: hidden 64,
# intermediate 128, 4 heads of 16, 2 kv heads; r * (in + out) summed over the layer's modules)
ARCHS = {
    "llama": (None, 128 + 96 + 96 + 128 + 192 + 192 + 192),  # q k v o gate up down
    "qwen2": (None, 1024),
    "qwen3": (None, 1024),
    "gemma2": (None, 1024),
    "gemma3": (None, 1024),
    # o (64,64); fused qkv (64, 64+2*32); fused gate_up (64, 2*128); down (128, 64)
    "phi3": (ALL_LINEAR, 128 + 192 + 320 + 192),
    # Conv1D: c_attn (64, 3*64), attn.c_proj (64, 64), c_fc (64, 128), mlp.c_proj (128, 64)
    "gpt2": (ALL_LINEAR, 256 + 128 + 192 + 192),
    # the experts are 3D parameters no LoRA module wraps: the attention is adapted, the experts stay frozen
    "qwen3_moe": (ATTENTION, 128 + 96 + 96 + 128),
    "mixtral": (ATTENTION, 448),
}
TINY2 = ("model=tiny", "model.tiny.num_layers=2", "tracking.mode=disabled")


def overrides(arch: str, *more: str) -> tuple[str, ...]:
    targets = ARCHS[arch][0]
    return (*TINY2, f"model.tiny.arch={arch}", *([targets] if targets else []), *more)


@pytest.mark.parametrize("strategy", ["uniform", "random"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_dry_run_plans_what_peft_builds(arch, strategy, tmp_path):
    """The planned count (the sites' r * (in + out)) is PEFT's built count on the meta device, and the closed
    form from the dimensions; random ranks differ per layer and still match."""
    result = run_job(typed(*overrides(arch, f"strategy={strategy}", "dry_run=true", "seed=3")), tmp_path)
    ranks = result.allocation.ranks
    assert result.status == "dry_run" and len(ranks) == 2 and sum(ranks) == 16
    assert result.params.built == result.params.planned == ARCHS[arch][1] * sum(ranks)
    if strategy == "random":
        assert ranks != [8, 8]


def skeleton(arch: str):
    cfg = ModelConfig(name="tiny", source="tiny", tiny=TinyModelConfig(arch=arch, num_layers=2))
    return lora.skeleton(models.hf_config(cfg, "/nonexistent"))


def test_gpt2_sites_name_both_c_proj_apart_and_read_conv1d_transposed():
    """GPT-2: h.N layers, c_proj both in attn and mlp, Conv1D weights stored (in, out); PEFT's A is (r x in)."""
    from peft import get_peft_model

    from grpo_rank.config.schema import LoraSettings

    model = skeleton("gpt2")
    sites = find_sites(model, ["all-linear"])
    # a dotted tail targets one of the two c_proj only
    assert [s.name for s in find_sites(model, ["mlp.c_proj"])] == [f"transformer.h.{i}.mlp.c_proj" for i in (0, 1)]
    assert [(s.layer, s.proj, s.in_features, s.out_features, s.transposed) for s in sites[:4]] == [
        (0, "c_attn", 64, 192, True), (0, "attn.c_proj", 64, 64, True), (0, "c_fc", 64, 128, True),
        (0, "mlp.c_proj", 128, 64, True)]
    assert [s.block for s in sites] == ["transformer.h.0"] * 4 + ["transformer.h.1"] * 4
    peft_model = get_peft_model(model, lora.lora_config(sites, [4, 12], LoraSettings()))
    layer = peft_model.get_submodule("base_model.model.transformer.h.1.attn.c_attn")
    assert layer.lora_A["default"].weight.shape == (12, 64) and layer.lora_B["default"].weight.shape == (192, 12)


def test_module_types_are_the_shortest_tails_that_tell_modules_apart():
    paths = ["self_attn.q_proj", "mlp.down_proj", "attn.c_proj", "mlp.c_proj", "c_proj"]
    assert module_types(paths) == {"self_attn.q_proj": "q_proj", "mlp.down_proj": "down_proj",
                                   "attn.c_proj": "attn.c_proj", "mlp.c_proj": "mlp.c_proj", "c_proj": "c_proj"}


class Stack(torch.nn.Module):
    """A decoder whose layers sit under `decoder_blocks`: no default layout."""

    def __init__(self):
        super().__init__()
        self.decoder_blocks = torch.nn.ModuleList(torch.nn.ModuleDict({"proj": torch.nn.Linear(8, 4)}) for _ in range(3))
        self.head = torch.nn.Linear(4, 8)


def test_layer_pattern_is_configurable():
    with pytest.raises(SiteError, match="finds no layer number in decoder_blocks.0.proj"):
        find_sites(Stack(), ["proj"])
    sites = find_sites(Stack(), ["proj"], r"(?:^|\.)decoder_blocks\.(\d+)\.")
    assert [(s.layer, s.proj, s.block, s.per_rank) for s in sites] == [(i, "proj", f"decoder_blocks.{i}", 12)
                                                                      for i in range(3)]
    with pytest.raises(SiteError, match="finds no layer number in head"):  # a targeted module outside the layers
        find_sites(Stack(), ["proj", "head"], r"(?:^|\.)decoder_blocks\.(\d+)\.")
    assert typed().lora.layer_pattern == LAYER_PATTERN


@pytest.mark.parametrize("arch", ["gpt2", "phi3"])
def test_adalora_plans_what_peft_builds_on_the_same_sites(arch):
    """AdaLoRA (training/adalora.py) reads the same sites: its closed form is PEFT's AdaLoRA count."""
    from peft import get_peft_model

    from grpo_rank.training import adalora

    cfg = typed(*overrides(arch, "strategy=adalora"))
    model, _ = models.load(cfg.model, "/nonexistent", seed=0)  # on the meta device PEFT leaves ranknum trainable
    sites = lora.sites_for(model, cfg.lora)
    peft_model = get_peft_model(model, adalora.adalora_config(sites, cfg, steps=4))
    assert lora.trainable_params(peft_model) == adalora.planned_params(sites, cfg) == 12 * (ARCHS[arch][1] + 4) * 2
    assert adalora.target_total(sites, [8, 8]) == 8 * 8
    info = adalora.adaptive_info(peft_model, cfg, sites, 64)
    assert set(info.final_module_ranks) == {s.proj for s in sites} and info.final_layer_ranks == [12, 12]


def refusal(tmp_path, monkeypatch, *args: str) -> str:
    """The one line a job's refusal prints; the model's weights must never have been loaded."""
    def tripwire(*a, **k):
        raise AssertionError("weights loaded before the refusal")

    monkeypatch.setattr(models, "load", tripwire)
    with pytest.raises(InputError) as caught:
        run_job(typed(*args), tmp_path)
    line = error_line(caught.value)
    assert line is not None and "\n" not in line
    return line


@pytest.mark.parametrize("arch, more, expect", [
    ("gpt2", (), "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj match no module of GPT2LMHeadModel, "
                 "whose linear layers are c_attn, attn.c_proj, c_fc, mlp.c_proj"),
    ("phi3", (), "q_proj, k_proj, v_proj, gate_proj, up_proj match no module of Phi3ForCausalLM"),
    ("qwen3_moe", (), "its experts are 3D parameters (model.layers.0.mlp.experts.gate_up_proj"),
    ("mixtral", (ALL_LINEAR,), "all-linear would silently train none of them"),
    ("qwen3_moe", ("lora.target_modules=[gate]",), "is a Qwen3MoeTopKRouter, not a linear layer"),
    ("llama", (r"lora.layer_pattern='(?:^|\.)blocks\.(\d+)\.'",), "finds no layer number in model.layers.0"),
    ("llama", ("lora.target_modules=[qproj]",), "qproj matches no module of LlamaForCausalLM"),
])
def test_unsupported_targets_are_refused_in_one_line_before_weights_load(arch, more, expect, tmp_path, monkeypatch):
    line = refusal(tmp_path, monkeypatch, *TINY2, f"model.tiny.arch={arch}", "strategy=uniform", *more)
    assert line.startswith("grpo-rank: unsupported model: ") and expect in line, line


def test_a_model_that_is_no_causal_lm_is_refused(tmp_path, monkeypatch):
    from transformers import T5Config

    T5Config(num_layers=2, d_model=16, d_ff=32, num_heads=2, d_kv=8, vocab_size=64).save_pretrained(tmp_path / "t5")
    line = refusal(tmp_path, monkeypatch, "model=hf", f"model.path={tmp_path / 't5'}", "tracking.mode=disabled")
    assert "T5Config (model_type 't5') has no causal-LM class" in line


def test_quantization_needs_a_gpu_but_a_dry_run_plans_it(tiny_gpt2, tmp_path, monkeypatch):
    hf = ("model=hf", f"model.path={tiny_gpt2}", ALL_LINEAR, "tracking.mode=disabled")
    planned = run_job(typed(*hf, "model.quantization=4bit", "dry_run=true"), tmp_path / "dry")
    assert planned.params.built == planned.params.planned == ARCHS["gpt2"][1] * 16
    if torch.cuda.is_available():
        pytest.skip("the refusal is for a machine without a GPU")
    line = refusal(tmp_path / "run", monkeypatch, *hf, "model.quantization=4bit")
    assert "model.quantization=4bit (QLoRA, bitsandbytes) needs a GPU" in line


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed here")
def test_quantization_without_bitsandbytes_is_refused_before_the_job(tiny_gpt2):
    from grpo_rank.run import prepare

    with pytest.raises(InputError, match=r"model.quantization=8bit needs bitsandbytes \(and a GPU\)"):
        prepare(compose("model=hf", f"model.path={tiny_gpt2}", ALL_LINEAR, "model.quantization=8bit"))
    prepare(compose("model=hf", f"model.path={tiny_gpt2}", ALL_LINEAR, "model.quantization=8bit", "dry_run=true"))


def test_hf_settings_are_typed_and_checked():
    cfg = typed("model=hf", "model.path=Qwen/Qwen3-0.6B", "model.revision=main", "model.attn_implementation=sdpa")
    assert (cfg.model.name, cfg.model.source, cfg.model.revision, cfg.model.trust_remote_code) == \
        ("Qwen3-0.6B", "hub", "main", False)
    assert models.hub_args(cfg.model) == {"revision": "main", "trust_remote_code": False}
    assert models.quantization_args(cfg.model) == {}


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A 2-layer random GPT-2 and the tiny tokenizer saved as a model folder, as save_pretrained leaves one."""
    folder = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    model, tok = models.load(ModelConfig(name="tiny", source="tiny", tiny=TinyModelConfig(arch="gpt2", num_layers=2)),
                             "/nonexistent", seed=0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


E2E = ("strategy=proportional", "grpo.steps=1", "profile.steps=1", "grpo.max_completion_length=8", "eval.n=2",
       "eval.batch_size=2", "eval.max_new_tokens=8", "task.train_size=16", "grpo.save_steps=0",
       "tracking.mode=disabled")


def grpo_job(tmp_path, *args: str):
    job = tmp_path / "job"
    result = run_job(typed(*args, *E2E, f"profile.cache_dir={tmp_path}/profiles"), job)
    return result, read_grad_records(job / GRADS)


def check_job(result, grads, types: set[str]) -> None:
    assert result.status == "ok" and result.profile.source == "profiled"
    assert sum(result.allocation.ranks) == 16 and result.params.built == result.params.planned
    for phase in ("profile", "train"):
        rows = grads["phase"] == phase
        assert set(grads["layer"][rows].tolist()) == {0, 1} and set(grads["module"][rows].tolist()) == types
        b = rows & (grads["matrix"] == "B")
        assert b.sum() == 2 * len(types) and (grads["norm"][b] > 0).all()  # every B got a gradient
    train_b = (grads["phase"] == "train") & (grads["matrix"] == "B")
    assert grads["rank"][train_b].tolist() == [result.allocation.ranks[layer] for layer in grads["layer"][train_b]]


@pytest.mark.parametrize("arch, types", [("phi3", {"o_proj", "qkv_proj", "gate_up_proj", "down_proj"}),
                                         ("qwen3_moe", {"q_proj", "k_proj", "v_proj", "o_proj"}),
                                         ("gemma3", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                     "down_proj"})])
def test_proportional_grpo_runs_end_to_end(arch, types, tmp_path, cache_dir):
    result, grads = grpo_job(tmp_path, *overrides(arch))
    check_job(result, grads, types)


def test_proportional_grpo_on_a_model_folder_through_model_hf(tiny_gpt2, tmp_path, cache_dir):
    result, grads = grpo_job(tmp_path, "model=hf", f"model.path={tiny_gpt2}", ALL_LINEAR)
    assert result.job.model == "tiny-gpt2"
    check_job(result, grads, {"c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"})
    assert np.isfinite(result.eval.accuracy)


@pytest.mark.slow  # a process of its own (~40 s here); the same refusal is checked in-process above
def test_the_command_refuses_gpt2_default_targets_in_one_line(tiny_gpt2, tmp_path):
    proc = run_cli(["grpo_rank.run", "model=hf", f"model.path={tiny_gpt2}", "dry_run=true", "tracking.mode=disabled",
                    f"hydra.run.dir={tmp_path}/run"], cwd=ROOT, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert lines[-1].startswith("grpo-rank: unsupported model: lora.target_modules=[q_proj"), proc.stderr[-2000:]
    assert "use lora.target_modules=[all-linear]" in lines[-1]


def test_compose_the_hf_group_without_path_fails_in_validation():
    from grpo_rank.config.schema import ConfigError, to_typed
    from grpo_rank.config.validate import validate

    with pytest.raises(ConfigError, match=r"model.path=None: a hub model needs a hub id or local folder"):
        validate(to_typed(compose("model=hf")))
