"""Shared fixtures: Hydra composition of the real conf/, a per-session cache dir, a tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"

# tests never talk to a W&B server, and never pick up a developer's key
os.environ.pop("WANDB_API_KEY", None)
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def compose(*overrides: str):
    """The composed DictConfig for these overrides, exactly as `python -m grpo_rank.run` builds it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir


    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def typed(*overrides: str):
    from grpo_rank.config.schema import to_typed

    return to_typed(compose(*overrides))


# small enough for CI: 2 prompts x 4 completions of 8 tokens per step
TINY = ("model=tiny", "grpo.steps=2", "profile.steps=2", "grpo.max_completion_length=8",
        "eval.n=8", "eval.batch_size=8", "eval.max_new_tokens=8", "task.train_size=64")


def run_cli(args: list[str], cwd: Path, env_extra: dict | None = None, timeout: int = 900):
    env = dict(os.environ, **(env_extra or {}))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@contextmanager
def detached_wandb_service(idle_timeout: str = "5m"):
    """A detached wandb-core service (`wandb beta core start`), yielded as the WANDB_SERVICE environment
    entry that makes processes connect to it, as W&B advises for many workers on a node; stopped after."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("WANDB_SERVICE", None)  # this pytest process's own service, when an earlier test used W&B here
    start = subprocess.run([sys.executable, "-m", "wandb", "beta", "core", "start", "--idle-timeout", idle_timeout],
                           env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    token = start.stdout.split()[0]
    try:
        yield {"WANDB_SERVICE": token}
    finally:
        subprocess.run([sys.executable, "-m", "wandb", "beta", "core", "stop"], env=dict(env, WANDB_SERVICE=token),
                       capture_output=True, timeout=120)


# the session's one tiny sweep (uniform, proportional, random x seeds 0, 1), shared by the golden, CLI and
# report tests; a test that must change it works on its own copy (copy_tiny_sweep)
TINY_STRATEGIES = ("uniform", "proportional", "random")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # as when the golden records were made


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, cache_dir):
    """(the sweep folder, the finished process) of `python -m grpo_rank.run -m` on the tiny model."""
    root = tmp_path_factory.mktemp("tiny_sweep")
    proc = run_cli(["grpo_rank.run", "-m", *TINY, f"strategy={','.join(TINY_STRATEGIES)}", "seed=0,1",
                    "tracking.mode=offline", f"hydra.sweep.dir={root}/multirun", f"profile.cache_dir={root}/profiles"],
                   cwd=root, env_extra=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "multirun", proc


def copy_tiny_sweep(tiny_sweep, dest: Path) -> Path:
    """A copy of the shared sweep (with its profile cache beside it) that a test may change."""
    sweep_dir, _ = tiny_sweep
    shutil.copytree(sweep_dir.parent, dest)
    return dest / sweep_dir.name


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = Path(os.environ.get("GRPO_RANK_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["GRPO_RANK_CACHE"] = str(path)
    return path


def job_folders(sweep_dir: Path) -> dict[str, Path]:
    """Every job folder of a sweep that holds a record, by folder name."""
    from grpo_rank.record.files import RESULT
    from grpo_rank.sweep import layout

    return {p.name: p for p in layout.job_folders(sweep_dir) if (p / RESULT).exists()}


def jobs_by_arm(sweep_dir: Path) -> dict[tuple[str, str, int], Path]:
    """Job folders keyed by (strategy, budget, seed) as their records say."""
    from grpo_rank.record.result import read_result

    out = {}
    for folder in job_folders(sweep_dir).values():
        job = read_result(folder).job
        out[(job.strategy, job.budget, job.seed)] = folder
    return out


def summary_lines(stdout: str) -> dict[str, str]:
    """The sweep summary's `  <job folder>: <outcome>: <why>` lines, by job folder."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("  ") and ": " in line:
            name, rest = line.strip().split(": ", 1)
            out[name] = rest
    return out


class JobFiles:
    """One job folder read back for a test: the typed record and the other files."""

    def __init__(self, path: Path):
        from grpo_rank.record.result import read_result

        self.path = Path(path)
        self.result = read_result(self.path)

    @property
    def grads(self):
        from grpo_rank.record.files import GRADS, read_grad_records

        return read_grad_records(self.path / GRADS) if (self.path / GRADS).exists() else None

    @property
    def train_log(self) -> list[dict]:
        from grpo_rank.record.files import TRAIN_LOG, read_jsonl

        return read_jsonl(self.path / TRAIN_LOG)

    @property
    def outcomes(self) -> list[dict]:
        from grpo_rank.record.files import OUTCOMES, read_jsonl

        return read_jsonl(self.path / OUTCOMES)


def slurm_up() -> bool:
    """Whether the local Slurm cluster answers (`bash ../shared/slurm/local-slurm.sh start` brings it up)."""
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "is UP" in out


def wandb_records(job_dir: Path) -> list[dict]:
    files = sorted(job_dir.glob("wandb/*/run-*.wandb"))
    assert files, f"no offline W&B run under {job_dir}"
    wandb_bin = shutil.which("wandb") or str(Path(sys.executable).with_name("wandb"))
    out = subprocess.run([wandb_bin, "leet", "inspect", "--json", str(files[-1])], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def read_csv(path: Path) -> list[dict]:
    """A report CSV as rows of strings, the way a reader of the file sees it."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def no_model_loads(monkeypatch):
    """Tripwires on every way this package loads a model or its config: bad input must be found first."""
    from grpo_rank.data import models

    def tripwire(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was found")

    for name in ("load", "hf_config", "load_tiny", "load_hub", "load_gguf_package"):
        monkeypatch.setattr(models, name, tripwire)


def refused(overrides) -> str:
    """The one line the command prints for these overrides, through the same steps as its main; fails the
    test when they are accepted or the error is not reported as bad input."""
    from grpo_rank.errors import error_line, one_line
    from grpo_rank.run import prepare

    try:
        prepare(compose(*overrides))
    except Exception as exc:  # noqa: BLE001 - the point is which kind it is
        line = error_line(exc)
        assert line is not None, f"not reported as bad input: {one_line(exc)}"
        return line
    pytest.fail(f"accepted: {list(overrides)}")
