"""Job folders named by what the job is, and found by who it is.

    multirun/<date>/<time>/seed-0_strategy-uniform/

conf/config.yaml sets `hydra.sweep.subdir: ${grpo_rank_job_dir:${hydra.sweep.dir},${hydra.overrides.task}}`.
Hydra's sweeper writes the sweep's overrides (with their value lists) to `<sweep dir>/multirun.yaml`
before it launches a job; a key is swept when its override there is a sweep (`seed=0,1,2`,
`range(3)`, ...). A new job's folder lists those keys, sorted, as `key-value` joined by `_`, so it does
not depend on the job's position in the sweep. Keys fixed for the whole sweep are in each job's
`.hydra/overrides.yaml` and result.json, not in the name. Names hold no `=` or `,`, so a folder can be
passed back as an override value (`profile.from_run=<sweep>/seed-0_strategy-uniform`); any other
character outside [A-Za-z0-9._+-] is written as %XX.

A sweep that grows finds its earlier jobs by identity, not by name: `strategy=uniform,random seed=0`
names the uniform seed-0 job `strategy-uniform`, `strategy=uniform,random seed=0,1` would name the same
job `seed-0_strategy-uniform`. Each launch of a
job records its `job_key` in runs.jsonl (tracking.job_key: the hash of every setting that changes its
result, without the code version); before a job gets a folder, the resolver looks for the folder of
the sweep that holds its key: the one its name gives first, then any other. Found, the job runs there
(a finished one is skipped, an unfinished one resumes) and the folder keeps its earlier name; not
found, the job gets the folder its name gives (a job of other settings there, which is not this job,
runs again in it: change a fixed setting into a new sweep folder, or sweep it). Folders written before
keys were recorded are keyed from their `.hydra/config.yaml`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from grpo_rank.record.files import RESULT, RUNS, read_jsonl
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


def config_key(cfg: DictConfig) -> str:
    """tracking.job_key of a composed config (with or without its `hydra` node). Raises on one that is not
    a valid RunConfig."""
    from grpo_rank.config.schema import RunConfig, to_typed
    from grpo_rank.pipeline.tracking import job_key

    cfg = copy.deepcopy(cfg)
    with read_write(cfg), open_dict(cfg):
        cfg.pop("hydra", None)
    if OmegaConf.get_type(cfg) is not RunConfig:  # a plain one, read back from .hydra/config.yaml
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
    return job_key(to_typed(cfg))


def folder_key(folder: Path) -> str | None:
    """The job_key of the job in `folder`: the last one its launches recorded; for a folder from before keys
    were recorded, from the config Hydra saved there. None when it has none (never launched, unreadable)."""
    keys = [e["job_key"] for e in read_jsonl(folder / RUNS) if e.get("job_key")]
    if keys:
        return keys[-1]
    saved = folder / ".hydra" / "config.yaml"
    if not saved.exists() or not ((folder / RUNS).exists() or (folder / RESULT).exists()):
        return None
    try:
        return config_key(OmegaConf.load(saved))
    except Exception:  # noqa: BLE001 - a config of other code (renamed keys): no identity to match
        return None


def job_folder(sweep_dir: Path, name: str, key: Callable[[], str | None]) -> str:
    """The folder of `sweep_dir` that holds the job whose identity `key()` gives: `name` when it does, else
    another folder that does (an earlier launch named the job differently), else `name`."""
    named = sweep_dir / name
    try:
        wanted = key()
    except Exception:  # noqa: BLE001 - not a valid config: the job reports that itself, in its own folder
        return name
    if wanted is None or (named.is_dir() and folder_key(named) == wanted):
        return name
    if sweep_dir.is_dir():
        for folder in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p != named and not p.name.startswith(".")):
            if folder_key(folder) == wanted:
                return folder.name
    return name


def _resolve(sweep_dir, overrides, _root_) -> str:
    name = job_dir_name([str(o) for o in overrides], swept_keys(str(sweep_dir)))
    return job_folder(Path(str(sweep_dir)), name, lambda: config_key(_root_))


if not OmegaConf.has_resolver(RESOLVER):
    OmegaConf.register_new_resolver(RESOLVER, _resolve)

