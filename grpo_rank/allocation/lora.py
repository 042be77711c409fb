"""Build the PEFT LoRA config for a per-layer rank plan, and check what PEFT built against the plan.

PEFT matches a `rank_pattern` key as the regex `(.*\\.)?(key)$` against module names, first match
wins: a loose key like `layers.1.self_attn.q_proj` is fine, but `model.layers.1.*.q_proj` also hits
layers 10-19, and a key that matches nothing silently leaves the default rank. So every targeted
module gets its own key, the escaped full module path, and after building we compare every module's
rank and the trainable parameter count with the plan; any difference is an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grpo_rank.allocation.allocate import lora_param_count, projection_shapes

if TYPE_CHECKING:  # config/schema.py sits above allocation: it validates against allocate.STRATEGIES
    from grpo_rank.config.schema import LoraSettings

MODULE_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.([a-z_]+_proj)$")


class LoraBuildError(RuntimeError):
    """PEFT built something other than the plan."""


@dataclass(frozen=True)
class Site:
    layer: int
    proj: str
    name: str  # full module path in the base model, e.g. model.layers.1.self_attn.q_proj


def find_sites(model, targets: Sequence[str]) -> list[Site]:
    """Every targeted projection of every decoder layer, in (layer, target order)."""
    sites = []
    for name, _ in model.named_modules():
        m = MODULE_RE.search(name)
        if m and m.group(2) in targets and "lora_" not in name and "base_layer" not in name:
            sites.append(Site(int(m.group(1)), m.group(2), name))
    order = {t: i for i, t in enumerate(targets)}
    sites.sort(key=lambda s: (s.layer, order[s.proj]))
    return sites


def num_layers(hf_config) -> int:
    return int(hf_config.num_hidden_layers)


def shapes_from_config(hf_config, targets: Sequence[str]) -> dict[str, tuple[int, int]]:
    heads = hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    return projection_shapes(hf_config.hidden_size, hf_config.intermediate_size, heads,
                             getattr(hf_config, "num_key_value_heads", None) or heads, head_dim, targets)


def planned_params(hf_config, ranks: Sequence[int], targets: Sequence[str]) -> int:
    return lora_param_count(shapes_from_config(hf_config, targets), ranks)


def lora_config(sites: Sequence[Site], ranks: Sequence[int], settings: LoraSettings):
    from peft import LoraConfig

    rank_pattern = {re.escape(s.name): int(ranks[s.layer]) for s in sites}
    alpha_pattern = {}
    if settings.alpha_mode == "per_rank":
        alpha_pattern = {re.escape(s.name): settings.alpha * ranks[s.layer] / settings.r for s in sites}
    return LoraConfig(
        r=settings.r,  # never used: every targeted module has its own rank_pattern entry
        lora_alpha=settings.alpha,  # alpha_mode=fixed (PEFT's convention; the study states none): alpha/r moves with r
        lora_dropout=settings.dropout,
        target_modules=[s.name for s in sites],
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        use_rslora=settings.alpha_mode == "rslora",
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


def meta_build(hf_config, ranks: Sequence[int], settings: LoraSettings) -> int:
    """Build the LoRA model on the meta device (no weights, no download) and verify it; returns the
    trainable parameter count."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    sites = find_sites(model, settings.target_modules)
    peft_model = get_peft_model(model, lora_config(sites, ranks, settings))
    return verify(peft_model, sites, ranks, planned_params(hf_config, ranks, settings.target_modules))
