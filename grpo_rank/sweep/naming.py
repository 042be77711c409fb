"""Job folders named by what the job is: the swept keys of the sweep with this job's values.

    multirun/<date>/<time>/seed-0_strategy-uniform/

conf/config.yaml sets `hydra.sweep.subdir: ${grpo_rank_job_dir:${hydra.sweep.dir},${hydra.overrides.task}}`.
Hydra's sweeper writes the sweep's overrides (with their value lists) to `<sweep dir>/multirun.yaml`
before it launches a job; a key is swept when its override there is a sweep (`seed=0,1,2`,
`range(3)`, ...). The folder lists those keys, sorted, as `key-value` joined by `_`, so it does not depend on
the job's position in the sweep: relaunching the sweep with one more seed finds every earlier job in
its folder (finished ones are skipped) and runs only the new ones. Keys fixed for the whole sweep are
in each job's `.hydra/overrides.yaml` and result.json, not in the name. Names hold no `=` or `,`, so a
folder can be passed back as an override value (`profile.from_run=<sweep>/seed-0_strategy-uniform`);
any other character outside [A-Za-z0-9._+-] is written as %XX.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from grpo_rank.sweep.layout import expand, parse_overrides

RESOLVER = "grpo_rank_job_dir"
UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")  # what may not appear unquoted in a Hydra override value or a path


def expand_sweep(sweep_dir: str | Path) -> tuple[list[list[str]], set[str]]:
    """Every job's overrides as Hydra's basic sweeper expands `<sweep>/multirun.yaml`, and the swept keys
    (layout.expand). Raises when there is no readable multirun.yaml."""
    found = expand(sweep_dir)
    return found.jobs, found.swept


def swept_keys(sweep_dir: str | Path) -> set[str] | None:
    """The keys swept in this sweep, from its multirun.yaml; None when there is none to read."""
    try:
        return expand_sweep(sweep_dir)[1]
    except Exception:  # noqa: BLE001 - no readable multirun.yaml: fall back to every override
        return None


def job_dir_name(overrides: list[str], swept: set[str] | None) -> str:
    """`key-value` of every swept key of this job (all its overrides when `swept` is None), sorted, joined by `_`."""
    pairs = [f"{key}-{_safe(value)}" for key, value in parse_overrides(overrides).items()
             if not key.startswith("hydra") and (swept is None or key in swept)]
    return "_".join(sorted(pairs)) or "job"


def _safe(value: str) -> str:
    return UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)


def _resolve(sweep_dir, overrides) -> str:
    return job_dir_name([str(o) for o in overrides], swept_keys(str(sweep_dir)))


if not OmegaConf.has_resolver(RESOLVER):
    OmegaConf.register_new_resolver(RESOLVER, _resolve)
