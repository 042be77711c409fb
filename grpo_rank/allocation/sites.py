"""Where LoRA goes in a causal LM, whatever its architecture: the modules PEFT targets for
`lora.target_modules`, each with the layer it sits in, its type within the layer and its shape.

    from grpo_rank.allocation.sites import find_sites
    find_sites(model, ["q_proj", "v_proj"])   # Llama, Qwen2/3, Gemma 2/3, Mistral: q_proj, v_proj per layer
    find_sites(model, ["all-linear"])         # GPT-2: c_attn, attn.c_proj, c_fc, mlp.c_proj per layer

The rank plan (lora.py), the gradient records (training/gradnorm.py) and AdaLoRA (training/adalora.py)
all take their sites from here; nothing else reads module paths.

- Which modules: PEFT's own rule. A name targets every module whose path is it or ends in `.<name>` (so a
  dotted suffix such as `attn.c_proj` narrows it), and `all-linear` is expanded as PEFT expands it (every
  nn.Linear / Conv1D but the output head). The plan thus covers exactly what get_peft_model wraps.
- Which layer: the first group of `lora.layer_pattern` searched in the path (`layers.N`, `h.N`, `blocks.N`
  by default); the layer's path up to that index (`model.layers.3`) keys the layer's rank for PEFT.
- Which type: the shortest tail of the path below the layer that no other targeted module shares:
  `q_proj` in Llama, `attn.c_proj` and `mlp.c_proj` in GPT-2, where both end in c_proj.
- Which shape: (in, out) features, so a module is planned at r * (in + out) parameters. nn.Linear (and
  a bitsandbytes 4/8-bit Linear, a subclass) by in_features/out_features; GPT-2's Conv1D stores its weight
  transposed, (in, out), so by nx/nf. A fused projection (Phi-3's qkv_proj and gate_up_proj, GPT-2's
  c_attn) is one module and counts at its fused width, as PEFT builds it.

Refused in one line naming the model and why (SiteError), from the model's skeleton before any weights
load: a target name that matches no module (the line lists the model's own linear layers); a targeted
module that is not linear (an MoE router, a convolution, an embedding); one outside any numbered layer;
layer numbers with gaps, or one number in two stacks; and `all-linear` on a mixture-of-experts model whose
experts are 3D parameters (transformers 5's Qwen3-MoE, Mixtral, OLMoE...): no LoRA module can wrap them,
and all-linear would quietly leave every expert out. Name the modules to adapt instead (the attention
projections); the experts then stay frozen, as asked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from grpo_rank.errors import InputError

LAYER_PATTERN = r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\."
ALL_LINEAR = "all-linear"  # PEFT's shorthand, as the single entry of lora.target_modules


class SiteError(InputError):
    """The model's modules do not give a per-layer LoRA plan; the line names the model and why."""

    kind = "unsupported model"


@dataclass(frozen=True)
class Site:
    layer: int
    proj: str  # the module's type within its layer: q_proj, qkv_proj, attn.c_proj
    name: str  # full module path in the base model, e.g. model.layers.1.self_attn.q_proj
    in_features: int
    out_features: int
    block: str  # the layer's own path, e.g. model.layers.1
    transposed: bool = False  # GPT-2's Conv1D: W stored as (in, out), what PEFT calls fan_in_fan_out

    @property
    def per_rank(self) -> int:
        """LoRA parameters per unit of rank: A is (r x in), B is (out x r)."""
        return self.in_features + self.out_features


def features(module) -> tuple[int, int, bool] | None:
    """(in, out, stored transposed) of a module LoRA is planned on; None for any other kind."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        return module.nx, module.nf, True  # weight (nx, nf): the transpose of a Linear's
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, False
    return None


def module_types(paths: Iterable[str]) -> dict[str, str]:
    """Each path (below its layer) -> its shortest dotted tail that no other path ends in, else itself."""
    parts = {p: p.split(".") for p in dict.fromkeys(paths)}
    out = {}
    for p, mine in parts.items():
        out[p] = p
        for k in range(1, len(mine) + 1):
            if not any(q != p and theirs[-k:] == mine[-k:] for q, theirs in parts.items()):
                out[p] = ".".join(mine[-k:])
                break
    return out


def targeted(model, targets: Sequence[str]) -> list[tuple[str, object]]:
    """(path, module) of every module PEFT's LoRA would wrap for `targets`, in model order."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists

    config = LoraConfig(target_modules=ALL_LINEAR if list(targets) == [ALL_LINEAR] else list(targets))
    config = _maybe_include_all_linear_layers(config, model)
    return [(n, m) for n, m in model.named_modules() if n and check_target_module_exists(config, n)]


def expert_parameters(model) -> list[str]:
    """Experts kept as 3D tensors (num_experts, out, in), which no LoRA module wraps."""
    return [n for n, p in model.named_parameters() if p.ndim == 3 and "expert" in n.lower()]


def _shown(targets: Sequence[str]) -> str:
    return f"lora.target_modules=[{','.join(targets)}]"


def linear_types(model, layer_pattern: str) -> list[str]:
    """The linear modules' types in the model's numbered layers (for the lines that say what to target)."""
    regex, paths = re.compile(layer_pattern), []
    for name, module in model.named_modules():
        m = regex.search(name)
        if m and features(module) is not None:
            paths.append(name[m.end(1):].lstrip("."))
    return list(dict.fromkeys(module_types(paths).values()))


def _check_names(model, targets: Sequence[str], hits: list[tuple[str, object]], layer_pattern: str) -> None:
    arch = type(model).__name__
    experts = expert_parameters(model)
    if list(targets) == [ALL_LINEAR]:
        if experts:
            raise SiteError(
                f"{_shown(targets)}: {arch} keeps its experts as 3D parameters ({experts[0]}, ...), which no LoRA "
                "module can wrap, so all-linear would silently train none of them; name the modules to adapt, "
                f"e.g. lora.target_modules=[{','.join(t for t in linear_types(model, layer_pattern))}]")
        return
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n, _ in hits)]
    if not missing:
        return
    have = linear_types(model, layer_pattern)
    line = (f"{_shown(targets)}: {', '.join(missing)} {'matches' if len(missing) == 1 else 'match'} no module of "
            f"{arch}, whose linear layers are {', '.join(have) or 'none in numbered layers'}")
    if experts:
        line += (f"; its experts are 3D parameters ({experts[0]}, ...), which no LoRA module can wrap: adapt the "
                 "other layers, e.g. lora.target_modules=[" + ",".join(have) + "]")
    else:
        line += f"; name those, e.g. lora.target_modules=[{','.join(have)}], or use lora.target_modules=[all-linear]"
    raise SiteError(line)


def _check_layers(model, found: list[tuple[int, str, str]], layer_pattern: str) -> None:
    """Every layer from 0 to the last has targeted modules, and each number is one layer's."""
    arch = type(model).__name__
    blocks: dict[int, set[str]] = {}
    for layer, _, block in found:
        blocks.setdefault(layer, set()).add(block)
    for layer, paths in sorted(blocks.items()):
        if len(paths) > 1:
            a, b = sorted(paths)[:2]
            raise SiteError(f"lora.layer_pattern={layer_pattern!r}: layer {layer} of {arch} is both {a} and {b}; "
                            "narrow lora.target_modules to one stack or make lora.layer_pattern match only one")
    gaps = sorted(set(range(max(blocks) + 1)) - set(blocks))
    if gaps:
        raise SiteError(f"{arch}: layers {', '.join(map(str, gaps[:8]))} hold no targeted module, but the rank plan "
                        "gives every layer from 0 to the last a rank; add modules those layers have to "
                        "lora.target_modules (or use lora.target_modules=[all-linear])")


def find_sites(model, targets: Sequence[str], layer_pattern: str = LAYER_PATTERN) -> list[Site]:
    """Every module LoRA will wrap for `targets`, with its layer, type and shape, in (layer, model) order.
    Raises SiteError when they do not make a per-layer plan (see the module docstring)."""
    arch = type(model).__name__
    hits = targeted(model, targets)
    _check_names(model, targets, hits, layer_pattern)
    regex = re.compile(layer_pattern)
    found, shapes, below = [], [], []
    for name, module in hits:
        shape = features(module)
        if shape is None:
            raise SiteError(f"{_shown(targets)}: {name} of {arch} is a {type(module).__name__}, not a linear layer; "
                            "LoRA is planned on linear layers only (nn.Linear, GPT-2's Conv1D): leave it out")
        m = regex.search(name)
        if m is None:
            raise SiteError(f"lora.layer_pattern={layer_pattern!r} finds no layer number in {name} ({arch}); target "
                            "only modules inside the numbered layers, or set lora.layer_pattern to a regex whose "
                            r"first group is the layer index, e.g. '(?:^|\.)decoder_blocks\.(\d+)\.'")
        found.append((int(m.group(1)), name, name[:m.end(1)]))
        shapes.append(shape)
        below.append(name[m.end(1):].lstrip(".") or name.rsplit(".", 1)[-1])
    if not found:  # PEFT's own error for this is a traceback
        raise SiteError(f"{_shown(targets)}: no module of {arch} matches")
    _check_layers(model, found, layer_pattern)
    types = module_types(below)
    sites = [Site(layer, types[rel], name, i, o, block, t)
             for (layer, name, block), (i, o, t), rel in zip(found, shapes, below)]
    order = {s.name: k for k, s in enumerate(sites)}
    return sorted(sites, key=lambda s: (s.layer, order[s.name]))
