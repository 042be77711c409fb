"""Hydra override strings as a mapping, the one parser for the sweep's names, order, status and report.

    >>> from grpo_rank.sweep.overrides import parse_overrides
    >>> parse_overrides(["+strategy=uniform", "seed=0"])
    {'strategy': 'uniform', 'seed': '0'}
"""

from __future__ import annotations


def parse_overrides(items) -> dict[str, str]:
    """{'strategy': 'uniform', 'seed': '0'} from Hydra override strings like '+strategy=uniform'."""
    out = {}
    for item in items or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out
