"""Build the PEFT LoRA config for a per-layer rank plan, and check what PEFT built against the plan.

    sites = sites_for(model, cfg.lora)                 # where LoRA goes (sites.py), any causal LM
    peft_model = get_peft_model(model, lora_config(sites, ranks, cfg.lora))
    verify(peft_model, sites, ranks, planned_params(sites, ranks))   # LoraBuildError on any difference

PEFT reads a `rank_pattern` key as the regex `(.*\\.)?(key)$` against each module path and takes the first
key that matches: a loose key like `model.layers.1.*q_proj` also hits layers 10-19, and a key that matches
nothing silently leaves the default rank. So each layer gets one key, its own path escaped and then only
what lies below it (`model\\.layers\\.1(?:\\..+)?`, never layer 10), `lora_config` checks with PEFT's own
matcher that every site's first matching key is its layer's, and after building we compare every module's
rank and the trainable parameter count with the plan; any difference is an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from grpo_rank.allocation.sites import Site, SiteError, find_sites

if TYPE_CHECKING:  # config/schema.py sits above allocation: it validates against allocate.STRATEGIES
    from grpo_rank.config.schema import LoraSettings

if TYPE_CHECKING:
    from grpo_rank.config.schema import LoraSettings


class LoraBuildError(RuntimeError):
    """PEFT built something other than the plan."""


def sites_for(model, settings: LoraSettings) -> list[Site]:
    return find_sites(model, settings.target_modules, settings.layer_pattern)


def num_layers(sites: Sequence[Site]) -> int:
    return max(s.layer for s in sites) + 1


def config_layers(hf_config) -> int:
    """The layer count a config declares (GPT-2's n_layer too, through its attribute map; a multimodal
    config's language model's)."""
    return int(hf_config.get_text_config().num_hidden_layers)


def planned_params(sites: Sequence[Site], ranks: Sequence[int]) -> int:
    """r(l) * (in + out) for every targeted module, at its layer's rank."""
    return sum(int(ranks[s.layer]) * s.per_rank for s in sites)


def skeleton(hf_config, trust_remote_code: bool = False):
    """The causal LM of `hf_config` on the meta device: every module and shape, no weights, no download."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise
        raise SiteError(f"{type(hf_config).__name__} (model_type {hf_config.model_type!r}) has no causal-LM class "
                        "in transformers: grpo-rank trains decoder-only causal language models "
                        "(AutoModelForCausalLM); pick one of those") from None


def layer_keys(sites: Sequence[Site]) -> dict[int, str]:
    """Each layer's rank_pattern key: the layer's path, escaped, and anything below it."""
    return {s.layer: re.escape(s.block) + r"(?:\..+)?" for s in sites}


def check_keys(keys: dict[int, str], sites: Sequence[Site]) -> None:
    """With PEFT's own matcher (first key that matches wins), every site gets its own layer's key."""
    from peft.utils.other import get_pattern_key

    ordered = list(keys.values())
    for s in sites:
        got = get_pattern_key(ordered, s.name)
        if got != keys[s.layer]:
            raise LoraBuildError(f"rank_pattern: {s.name} (layer {s.layer}) would take the key {got!r}, "
                                 f"not its layer's {keys[s.layer]!r}")


def lora_config(sites: Sequence[Site], ranks: Sequence[int], settings: LoraSettings):
    from peft import LoraConfig

    keys = layer_keys(sites)
    check_keys(keys, sites)
    rank_pattern = {key: int(ranks[layer]) for layer, key in keys.items()}
    alpha_pattern = {}
    if settings.alpha_mode == "per_rank":
        alpha_pattern = {key: settings.alpha * ranks[layer] / settings.r for layer, key in keys.items()}
    return LoraConfig(
        r=settings.r,  # never used: every targeted module's layer has its own rank_pattern entry
        lora_alpha=settings.alpha,  # alpha_mode=fixed (PEFT's convention; the study states none): alpha/r moves with r
        lora_dropout=settings.dropout,
        target_modules=[s.name for s in sites],
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        use_rslora=settings.alpha_mode == "rslora",
        # GPT-2's Conv1D stores W as (in, out); PEFT sets this per module itself, with a warning for each
        fan_in_fan_out=all(s.transposed for s in sites),
        bias="none",
        task_type="CAUSAL_LM",
    )


def built_ranks(peft_model) -> dict[str, int]:
    """{base module path: rank} of every LoRA layer PEFT actually built."""
    out = {}
    for name, module in peft_model.named_modules():
        r = getattr(module, "r", None)
        if isinstance(r, dict) and "default" in r:
            # PEFT prefixes base_model.model.; the site names are relative to the base model
            out[name.removeprefix("base_model.model.")] = int(r["default"])
    return out


def trainable_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def verify(peft_model, sites: Sequence[Site], ranks: Sequence[int], planned: int) -> int:
    """Raise LoraBuildError unless every module's rank and the trainable count match the plan.
    Returns the built trainable parameter count."""
    built = built_ranks(peft_model)
    wrong = []
    for s in sites:
        got = built.get(s.name)
        if got != ranks[s.layer]:
            wrong.append(f"{s.name}: planned {ranks[s.layer]}, built {got}")
    extra = sorted(set(built) - {s.name for s in sites})
    if extra:
        wrong.append(f"unplanned LoRA modules: {extra[:3]}{'...' if len(extra) > 3 else ''}")
    n = trainable_params(peft_model)
    if n != planned:
        wrong.append(f"trainable parameters: planned {planned:,}, built {n:,}")
    if wrong:
        raise LoraBuildError("PEFT built a different LoRA than planned: " + "; ".join(wrong[:5]))
    return n


def meta_build(hf_config, ranks: Sequence[int], settings: LoraSettings, trust_remote_code: bool = False) -> int:
    """Build the LoRA model on the meta device (no weights, no download) and verify it; returns the
    trainable parameter count."""
    from peft import get_peft_model

    model = skeleton(hf_config, trust_remote_code)
    sites = sites_for(model, settings)
    peft_model = get_peft_model(model, lora_config(sites, ranks, settings))
    return verify(peft_model, sites, ranks, planned_params(sites, ranks))
