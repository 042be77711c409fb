"""A sweep folder as Hydra leaves it: the jobs its multirun.yaml expands to, and the subfolders that are
jobs. The one reading of both, for the job-folder names (naming.py), the status (status.py), the report
(analysis/report/discover.py) and the tests.

    >>> from grpo_rank.sweep.layout import job_folders
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grpo_rank.record.files import RESULT, RUNS
from grpo_rank.sweep.overrides import parse_overrides  # noqa: F401 - the sweep's one override parser, re-exported

MULTIRUN = "multirun.yaml"
NOT_JOBS = ("report", "wandb")  # folders the report and W&B write beside the jobs


@dataclass
class Expansion:
    jobs: list[list[str]]  # each job's override strings, in Hydra's launch order
    swept: set[str]  # the keys with more than one value, without their +/~ prefix


def read_yaml(path: Path):
    import yaml

    # the C loader when PyYAML has it: a sweep of hundreds of jobs has one overrides.yaml each
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def sweep_args(multirun: dict) -> list[str]:
    """The sweep's overrides as the basic sweeper reads them: hydra.sweeper.params first, then the
    command line's."""
    hydra = multirun.get("hydra") or {}
    params = (hydra.get("sweeper") or {}).get("params") or {}
    return [f"{k}={v}" for k, v in params.items()] + list((hydra.get("overrides") or {}).get("task") or [])


def expand_args(args: list[str]) -> Expansion:
    """Hydra's basic sweeper on these overrides: the cartesian product of their values, the first override
    outermost (one batch), each job's overrides as Hydra writes them to the job's .hydra/overrides.yaml
    (its parser normalises values: `dry_run=true` becomes `dry_run=True`, so no hand-made expansion
    would match the job folders)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(args)
    jobs = [list(job) for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    return Expansion(jobs, {o.get_key_element().lstrip("+~") for o in overrides if o.is_sweep_override()})


def expand(sweep_dir: str | Path) -> Expansion:
    """The jobs of `<sweep>/multirun.yaml`, in launch order. Raises when it is missing, unreadable, or written
    by another sweeper than Hydra's basic one or grpo-rank's ordered one (whose jobs this cannot know)."""
    multirun = read_yaml(Path(sweep_dir) / MULTIRUN) or {}
    target = str(((multirun.get("hydra") or {}).get("sweeper") or {}).get("_target_", ""))
    if target and not target.endswith(("BasicSweeper", "OrderedSweeper")):
        raise ValueError(f"sweeper {target} is neither Hydra's basic sweeper nor grpo-rank's ordered one")
    found = expand_args(sweep_args(multirun))
    if target.endswith("OrderedSweeper"):  # the default (conf/hydra/sweeper/ordered.yaml): profile readers last
        from grpo_rank.sweep.order import profile_readers_last

        found.jobs = profile_readers_last(found.jobs)
    return found


def is_job_folder(path: Path) -> bool:
    """A subfolder that is a job: Hydra made it (`.hydra/`), a launch recorded itself (runs.jsonl), or it
    holds a job record."""
    return (path.is_dir() and not path.name.startswith(".") and path.name not in NOT_JOBS
            and ((path / ".hydra").is_dir() or (path / RUNS).exists() or (path / RESULT).exists()))


def job_folders(sweep_dir: str | Path) -> list[Path]:
    return sorted(p for p in Path(sweep_dir).iterdir() if is_job_folder(p))


def folder_overrides(folder: Path) -> list[str]:
    """The overrides Hydra saved for a job folder; [] while it is missing or being written."""
    try:
        return [str(o) for o in read_yaml(folder / ".hydra" / "overrides.yaml") or []]
    except Exception:  # noqa: BLE001 - missing, or being written by Hydra this very moment
        return []
