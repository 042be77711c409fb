"""The library boundary: the ranks PEFT builds are the ranks we planned, and the count matches the
closed form. Real PEFT on the tiny model and on meta-device models (no weights, no download)."""

from __future__ import annotations

import re

import pytest

from grpo_rank.allocation import lora
from grpo_rank.allocation.allocate import lora_param_count, projection_shapes
from grpo_rank.config.schema import LoraSettings, ModelConfig, TinyModelConfig
from grpo_rank.data import models
from tests.conftest import typed

ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = typed("model=tiny").model
    return models.load(cfg, tmp_path_factory.mktemp("c"), seed=0)


def collision_plan(n_layers: int) -> list[int]:
    # layers 1, 10 and 11 differ: a loose `layers.1.` key would also capture 10-19
    ranks = [8] * n_layers
    ranks[1], ranks[10], ranks[11] = 16, 4, 12
    return ranks


def test_built_ranks_equal_the_plan_on_tiny(tiny):
    from peft import get_peft_model

    model, _ = tiny
    settings = LoraSettings(r=8)
    ranks = collision_plan(model.config.num_hidden_layers)
    sites = lora.find_sites(model, ALL7)
    assert len(sites) == 7 * model.config.num_hidden_layers
    peft_model = get_peft_model(model, lora.lora_config(sites, ranks, settings))
    built = lora.built_ranks(peft_model)
    for s in sites:
        assert built[s.name] == ranks[s.layer], s.name
    planned = lora.planned_params(sites, ranks)
    assert lora.verify(peft_model, sites, ranks, planned) == planned
    peft_model.unload()


def test_a_loose_regex_key_is_caught():
    """The pitfall of the study: `model.layers.1.*q_proj` also matches layers 10 and 11, silently."""
    from peft import LoraConfig, get_peft_model

    model, _ = models.load(ModelConfig(name="tiny", source="tiny", tiny=TinyModelConfig()), "/nonexistent", 0)
    sites = lora.find_sites(model, ["q_proj"])
    ranks = [8] * 12
    ranks[1] = 16
    loose = LoraConfig(r=8, target_modules=["q_proj"], rank_pattern={r"model.layers.1.*q_proj": 16})
    peft_model = get_peft_model(model, loose)
    built = lora.built_ranks(peft_model)
    assert built["model.layers.11.self_attn.q_proj"] == 16  # the silent collision, as PEFT does it
    with pytest.raises(lora.LoraBuildError, match="layers.11.self_attn.q_proj: planned 8, built 16"):
        lora.verify(peft_model, sites, ranks, lora.planned_params(sites, ranks))


def test_rank_pattern_has_one_key_per_layer_that_peft_matches_to_that_layer_only(tiny):
    """PEFT takes the first key whose `(.*\\.)?(key)$` matches: layer 1's key must not take layers 10 and 11."""
    from peft.utils.other import get_pattern_key

    model, _ = tiny
    sites = lora.find_sites(model, ALL7)
    cfg = lora.lora_config(sites, collision_plan(12), LoraSettings())
    assert list(cfg.rank_pattern) == [re.escape(f"model.layers.{i}") + r"(?:\..+)?" for i in range(12)]
    assert list(cfg.rank_pattern.values()) == collision_plan(12)
    for s in sites:
        assert get_pattern_key(list(cfg.rank_pattern), s.name) == list(cfg.rank_pattern)[s.layer], s.name
    key1 = list(cfg.rank_pattern)[1]
    assert not any(re.match(rf"(.*\.)?({key1})$", f"model.layers.{i}.self_attn.q_proj") for i in (10, 11))


def test_a_key_taken_by_another_layer_is_refused_before_peft_builds():
    """lora_config checks the keys with PEFT's matcher: a stack nested in a layer's path would take its key."""
    from grpo_rank.allocation.sites import Site

    sites = [Site(0, "q", "layers.0.q", 4, 4, "layers.0"), Site(1, "q", "layers.0.x.layers.1.q", 4, 4, "layers.0.x.layers.1")]
    with pytest.raises(lora.LoraBuildError, match="would take the key"):
        lora.lora_config(sites, [4, 8], LoraSettings())


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_meta_build_on_tiny_arches(arch):
    """PEFT's count equals the closed form from the config's dimensions (allocate.projection_shapes)."""
    cfg = ModelConfig(name="tiny", source="tiny", tiny=TinyModelConfig(arch=arch))
    hf = models.hf_config(cfg, "/nonexistent")
    ranks = collision_plan(hf.num_hidden_layers)
    shapes = projection_shapes(64, 128, 4, 2, 16, ALL7)
    assert lora.meta_build(hf, ranks, LoraSettings()) == lora_param_count(shapes, ranks)


def test_qwen2_5_1_5b_uniform_r32_is_36_929_536():
    """The study's 36.9M, from Qwen2.5-1.5B's dimensions, built by PEFT on the meta device."""
    from transformers import Qwen2Config

    hf = Qwen2Config(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                     num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
    assert lora.meta_build(hf, [32] * 28, LoraSettings(r=32)) == 36_929_536


@pytest.mark.parametrize("mode", ["fixed", "rslora", "per_rank"])
def test_alpha_mode_sets_the_scaling(tiny, mode):
    """fixed: scaling alpha/r moves with each layer's rank; rslora: alpha/sqrt(r); per_rank: every layer
    keeps alpha/lora.r; importance.lora_scaling (the report's normalisation) says the same."""
    from peft import get_peft_model

    from grpo_rank.allocation.importance import lora_scaling

    model, _ = models.load(ModelConfig(name="tiny", source="tiny", tiny=TinyModelConfig()), "/nonexistent", 0)
    settings = LoraSettings(r=8, alpha=16.0, alpha_mode=mode)
    ranks = collision_plan(12)
    sites = lora.find_sites(model, ALL7)
    peft_model = get_peft_model(model, lora.lora_config(sites, ranks, settings))
    modules = dict(peft_model.named_modules())
    for s in sites:
        scaling = modules[f"base_model.model.{s.name}"].scaling["default"]
        expected = {"per_rank": 16.0 / 8, "fixed": 16.0 / ranks[s.layer], "rslora": 16.0 / ranks[s.layer] ** 0.5}[mode]
        assert scaling == pytest.approx(expected), s.name
        assert lora_scaling(mode, 16.0, 8, ranks[s.layer]) == pytest.approx(expected)
