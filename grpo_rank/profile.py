"""The importance profile S(l): a short GRPO phase at uniform rank on the same model, task and seed,
whose per-layer LoRA gradient norms give S(l) (importance.py), or the recorded gradients of a finished
job (`profile.from_run=<job dir>`).

The profile's identity is `profile_key`: a hash of everything that determines it, recorded with the
results so that two jobs can be checked to have used the same profile. Computed profiles are kept in
a `ProfileCache` (`profile.cache_dir`) under that key, so the jobs of a sweep that need the same
profile (proportional at every budget, a rerun) compute it once, across processes and Slurm nodes:

    <cache_dir>/<key>/            grad_norms.parquet, train_log.jsonl, manifest.json (written last)
    <cache_dir>/<key>.lock        held while one job computes the profile; the others wait, then read
    <cache_dir>/<key>.work/       checkpoints of a computation in progress: a killed one is resumed
    <cache_dir>/computations.jsonl  one line per profile computed

Delete an entry's folder (or the whole cache) to compute it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import RunConfig
from .importance import importance
from .records import (GRADS, TRAIN_LOG, append_jsonl, atomic_write_text, file_lock, load_job, read_grad_records,
                      read_jsonl, write_grad_records, write_jsonl)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def runtime(cfg: RunConfig) -> dict:
    """What the machine changes about the computation itself (not just its rounding): a profile from a
    GPU in bf16 with vLLM generation is another profile than one from a CPU in fp32."""
    import torch

    from .models import torch_dtype
    from .train import use_vllm

    return {"device": "cuda" if torch.cuda.is_available() else "cpu", "dtype": str(torch_dtype(cfg.model.dtype)),
            "vllm": use_vllm(cfg.grpo.use_vllm)}


def profile_payload(cfg: RunConfig, ranks: Sequence[int], steps: int | None = None,
                    machine: dict | None = None) -> dict:
    """Everything that determines a uniform-rank GRPO phase's gradients; `steps` defaults to profile.steps."""
    g = asdict(cfg.grpo)
    for k in ("logging_steps", "save_steps", "steps"):  # logging and checkpointing do not move gradients
        g.pop(k)
    lo = asdict(cfg.lora)
    for k in ("r_min", "r_max", "multiple"):  # the allocation bounds reach the profile only through `ranks`
        lo.pop(k)
    return {"model": asdict(cfg.model), "task": asdict(cfg.task), "lora": lo, "ranks": [int(r) for r in ranks],
            "grpo": g, "steps": int(steps if steps is not None else cfg.profile.steps), "seed": cfg.seed,
            "runtime": machine if machine is not None else runtime(cfg), "v": 2}


def profile_key(cfg: RunConfig, ranks: Sequence[int], steps: int | None = None, machine: dict | None = None) -> str:
    payload = profile_payload(cfg, ranks, steps, machine)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Profile:
    grads: dict[str, np.ndarray]  # gradient records, phase "profile"
    log_rows: list[dict] = field(default_factory=list)  # TRL's per-step log of the profiling phase
    meta: dict = field(default_factory=dict)  # steps, nonzero_spread_fraction, computed_by, payload
    sha256: str | None = None  # of the cached grad_norms.parquet: jobs that read the same bytes agree


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ProfileCache:
    """Profiles keyed by `profile_key`, safe for concurrent jobs on one machine or a shared filesystem.

    An entry is built in a temporary folder and renamed into place, so a reader sees all of it or
    nothing; its manifest, written last, holds the sha256 of every file, so an entry that was torn,
    truncated or edited is detected, moved aside and computed again, never used.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def load(self, key: str) -> Profile | None:
        """The verified entry, or None when it is missing or corrupt."""
        folder = self.entry(key)
        if not folder.exists():
            return None
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            if manifest.get("key") != key:
                raise ValueError(f"manifest names key {manifest.get('key')!r}")
            for name, digest in manifest["files"].items():
                if _sha256(folder / name) != digest:
                    raise ValueError(f"sha256 of {name} does not match the manifest")
            grads = read_grad_records(folder / GRADS)
            rows = read_jsonl(folder / TRAIN_LOG)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            log.warning("profile cache entry %s is corrupt (%s: %s); it will be computed again",
                        folder, type(exc).__name__, exc)
            return None
        return Profile(grads, rows, manifest["meta"], manifest["files"][GRADS])

    def get_or_compute(self, key: str, compute: Callable[[Path], Profile]) -> tuple[Profile, str]:
        """(profile, "cache" | "profiled"). `compute(work_dir)` runs at most once per key at a time: the
        first job takes the lock and computes, the others wait on it and then read the entry."""
        hit = self.load(key)
        if hit is not None:
            return hit, "cache"
        with file_lock(self.root / f"{key}.lock"):
            hit = self.load(key)  # another job computed it while this one waited for the lock
            if hit is not None:
                return hit, "cache"
            work = self.root / f"{key}.work"
            start = time.perf_counter()
            profile = compute(work)
            self._store(key, profile)
            self._count(key, "computed", profile, time.perf_counter() - start)
            shutil.rmtree(work, ignore_errors=True)
        stored = self.load(key)
        if stored is None:
            raise RuntimeError(f"profile cache entry {self.entry(key)} failed verification right after writing")
        return stored, "profiled"

    def computations(self) -> list[dict]:
        return read_jsonl(self.root / "computations.jsonl")

    def _store(self, key: str, profile: Profile) -> None:
        tmp = self.root / f".{key}.tmp-{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_grad_records(tmp / GRADS, profile.grads)
        write_jsonl(tmp / TRAIN_LOG, profile.log_rows)
        files = {name: _sha256(tmp / name) for name in (GRADS, TRAIN_LOG)}
        atomic_write_text(tmp / MANIFEST, json.dumps({"key": key, "files": files, "meta": profile.meta}, indent=2,
                                                     default=str) + "\n")
        target = self.entry(key)
        if target.exists():  # a corrupt entry (load said so, under the lock): keep it for a post-mortem
            os.replace(target, self.root / f".{key}.corrupt-{int(time.time())}")
        os.replace(tmp, target)

    def _count(self, key: str, event: str, profile: Profile, seconds: float) -> None:
        row = {"key": key, "event": event, "computed_by": profile.meta.get("computed_by"),
               "host": socket.gethostname(), "pid": os.getpid(), "seconds": round(seconds, 3), "time": time.time()}
        append_jsonl(self.root / "computations.jsonl", row)  # one short O_APPEND write: lines never interleave


def from_run(path: str | Path) -> tuple[list[float], dict]:
    """Importance from a finished job's records: its profile phase if it had one, else its training
    (which is a valid profile only when that job trained at uniform rank)."""
    job = load_job(Path(path))
    grads = job.grads
    if grads is None:
        raise FileNotFoundError(f"profile.from_run={str(path)!r} has no gradient records (grad_norms.parquet)")
    phases = set(np.unique(grads["phase"]).tolist())
    if "profile" in phases:
        phase = "profile"
    elif job.result.get("job", {}).get("strategy") == "uniform":
        phase = "train"
    else:
        raise ValueError(f"profile.from_run={str(path)!r}: a {job.result['job']['strategy']} job's training "
                         "gradients are no uniform-rank profile; use a uniform job or one that profiled")
    imp = importance(grads, phase).tolist()
    steps = int(len(np.unique(grads["step"][grads["phase"] == phase])))
    info = {"source": "from_run", "path": str(Path(path).resolve()), "phase": phase, "steps": steps,
            "hash": (job.result.get("profile") or {}).get("hash")}
    return imp, info
