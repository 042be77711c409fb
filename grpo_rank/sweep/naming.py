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

RESOLVER = "grpo_rank_job_dir"
UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")  # what may not appear unquoted in a Hydra override value or a path


def expand_sweep(sweep_dir: str | Path) -> tuple[list[list[str]], set[str]]:
    """Every job's overrides as Hydra's basic sweeper expands `<sweep>/multirun.yaml` (hydra.sweeper.params
    first, then the command line's), and the swept keys. Raises when there is no readable multirun.yaml."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = OmegaConf.load(Path(sweep_dir) / "multirun.yaml").hydra
    params = hydra_cfg.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(hydra_cfg.overrides.task)
    overrides = OverridesParser.create().parse_overrides(args)
    batches = BasicSweeper.split_arguments(overrides, None)
    return [list(job) for batch in batches for job in batch], {o.get_key_element() for o in overrides
                                                                  if o.is_sweep_override()}


def swept_keys(sweep_dir: str | Path) -> set[str] | None:
    """The keys swept in this sweep, from its multirun.yaml; None when there is none to read."""
    try:
        return expand_sweep(sweep_dir)[1]
    except Exception:  # noqa: BLE001 - no readable multirun.yaml: fall back to every override
        return None


def job_dir_name(overrides: list[str], swept: set[str] | None) -> str:
    """`key-value` of every swept key of this job (all its overrides when `swept` is None), sorted, joined by `_`."""
    pairs = []
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key.startswith("hydra") or (swept is not None and key not in swept):
            continue
        pairs.append(f"{key}-{_safe(value)}")
    return "_".join(sorted(pairs)) or "job"


def _safe(value: str) -> str:
    return UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)


def _resolve(sweep_dir, overrides) -> str:
    return job_dir_name([str(o) for o in overrides], swept_keys(str(sweep_dir)))


if not OmegaConf.has_resolver(RESOLVER):
    OmegaConf.register_new_resolver(RESOLVER, _resolve)

