"""Where importance profiles come from, without training: the profile cache, which shares computed
profiles with every job that needs the same one, and an earlier job's records (`profile.from_run`).

A profile is the gradient records of a uniform-rank GRPO phase on the same model, task and seed
(profiling.py computes it). Its identity is `profile_key`: a hash of everything that determines it
(the config fields marked as changing a profile in config.py, the ranks, the steps, the runtime and
the version of the code that computes it), recorded with the results. Jobs of a sweep that need the
same profile (proportional at every budget, a rerun) compute it once, across processes and Slurm nodes:

    <cache_dir>/<key>/            grad_norms.parquet, train_log.jsonl, manifest.json (written last)
    <cache_dir>/<key>.lock        held while one job computes the profile; the others wait, then read
    <cache_dir>/<key>.work/       checkpoints of a computation in progress: a killed one is resumed
    <cache_dir>/computations.jsonl  one line per profile computed

An entry whose manifest, files or metadata do not verify is moved aside and computed again, never used.
Delete an entry's folder (or the whole cache) to compute it again. `from_run` reads S(l) from a finished
job's folder; preflight.py calls it before any model loads, so every problem with that folder is an
InputError.
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pyarrow import ArrowException

from grpo_rank.allocation.importance import SAME_AT_UNIFORM_RANK, layer_importance
from grpo_rank.config.schema import RunConfig, result_payload
from grpo_rank.errors import InputError
from grpo_rank.objective.user_rewards import module_versions
from grpo_rank.record.files import (
    GRADS,
    TRAIN_LOG,
    append_jsonl,
    atomic_dir,
    atomic_write_text,
    file_lock,
    read_grad_records,
    read_jsonl,
    sha256_file,
    write_grad_records,
    write_jsonl,
)
from grpo_rank.record.result import ProfileInfo, RecordError, read_result
from grpo_rank.record.version import code_version
from grpo_rank.runtime import device, distributed

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def profile_payload(cfg: RunConfig, ranks: Sequence[int], steps: int, machine: dict | None = None) -> dict:
    """Everything that determines a GRPO phase's gradients at `ranks` for `steps` steps."""
    config = result_payload(cfg, "profile")
    if all(int(r) == cfg.lora.r for r in ranks):  # the same model as its SAME_AT_UNIFORM_RANK mode's: one key
        config["lora"]["alpha_mode"] = SAME_AT_UNIFORM_RANK.get(cfg.lora.alpha_mode, cfg.lora.alpha_mode)
    return {"config": config, "ranks": [int(r) for r in ranks], "steps": int(steps),
            "runtime": machine if machine is not None else device.runtime(cfg.model.dtype, cfg.grpo.use_vllm),
            "code": code_payload(cfg)}


def code_payload(cfg: RunConfig) -> str | dict:
    """The code that computes a job's results, for its identity and profile key: this package's version,
    and the sources' hashes of the user's reward modules when it has any (only then, so that the keys of
    jobs without them stay what they were)."""
    if not cfg.grpo.reward_modules:
        return code_version()
    return {"grpo_rank": code_version(), "reward_modules": module_versions(cfg.grpo.reward_modules)}


def profile_key(cfg: RunConfig, ranks: Sequence[int], steps: int, machine: dict | None = None) -> str:
    payload = profile_payload(cfg, ranks, steps, machine)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Profile:
    grads: dict[str, np.ndarray]  # gradient records, phase "profile"
    log_rows: list[dict] = field(default_factory=list)  # TRL's per-step log of the profiling phase
    meta: dict = field(default_factory=dict)  # steps, nonzero_spread_fraction, computed_by, payload
    sha256: str | None = None  # of the cached grad_norms.parquet: jobs that read the same bytes agree


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
        """The verified entry, or None when it is missing; a damaged entry (any file, the manifest's shape or
        its metadata edited) is moved aside and None returned, so it is computed again."""
        folder = self.entry(key)
        if not folder.exists():
            return None
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            if not isinstance(manifest, dict) or manifest.get("key") != key:
                raise ValueError("manifest is not this key's")
            files, meta = manifest.get("files"), manifest.get("meta")
            if not isinstance(files, dict) or set(files) != {GRADS, TRAIN_LOG} or not isinstance(meta, dict):
                raise ValueError(f"manifest lists {sorted(files) if isinstance(files, dict) else files!r}")
            if manifest.get("meta_sha256") != _digest(key, files, meta):
                raise ValueError("manifest metadata does not match its checksum")
            for name, digest in files.items():
                if sha256_file(folder / name) != digest:
                    raise ValueError(f"sha256 of {name} does not match the manifest")
            grads = read_grad_records(folder / GRADS)
            rows = read_jsonl(folder / TRAIN_LOG)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._set_aside(key, f"{type(exc).__name__}: {exc}")
            return None
        return Profile(grads, rows, meta, files[GRADS])

    def _set_aside(self, key: str, why: str) -> None:
        folder = self.entry(key)
        aside = self.root / f".{key}.corrupt-{time.time_ns()}"
        log.warning("profile cache entry %s is damaged (%s); moved to %s, it will be computed again", folder, why,
                    aside.name)
        try:
            os.replace(folder, aside)
        except OSError:  # another job moved it first
            pass

    def get_or_compute(self, key: str, compute: Callable[[Path], Profile]) -> tuple[Profile, str]:
        """(profile, "cache" | "profiled"). `compute(work_dir)` runs at most once per key at a time: the
        first job takes the lock and computes, the others wait on it and then read the entry. A uniform
        job publishes its training as the profile through this same call (profiling.train_publishing)."""
        if not distributed.is_main():
            return self._follow(key, compute)
        hit = self.load(key)
        if hit is not None:
            distributed.share(("cache", None))
            return hit, "cache"
        with file_lock(self.root / f"{key}.lock"):
            hit = self.load(key)  # another job computed it while this one waited for the lock
            if hit is not None:
                distributed.share(("cache", None))
                return hit, "cache"
            work = self.root / f"{key}.work"
            distributed.share(("compute", str(work)))
            start = time.perf_counter()
            profile = compute(work)
            self._store(key, profile)
            self._count(key, "computed", profile, time.perf_counter() - start)
            shutil.rmtree(work, ignore_errors=True)
        distributed.share("stored")
        stored = self.load(key)
        if stored is None:
            raise RuntimeError(f"profile cache entry {self.entry(key)} failed verification right after writing")
        return stored, "profiled"

    def _follow(self, key: str, compute: Callable[[Path], Profile]) -> tuple[Profile, str]:
        """Another rank than 0 of a multi-process job: rank 0 alone takes the lock and decides; when it
        computes, this rank trains with it (the training is collective), then reads what rank 0 stored."""
        what, work = distributed.share()
        if what == "compute":
            compute(Path(work))
            distributed.share()  # rank 0 has stored the entry
        stored = self.load(key)
        if stored is None:
            raise RuntimeError(f"profile cache entry {self.entry(key)} is not readable on rank {distributed.rank()}")
        return stored, "profiled" if what == "compute" else "cache"

    def computations(self) -> list[dict]:
        return read_jsonl(self.root / "computations.jsonl")

    def _store(self, key: str, profile: Profile) -> None:
        def build(tmp: Path) -> None:
            write_grad_records(tmp / GRADS, profile.grads)
            write_jsonl(tmp / TRAIN_LOG, profile.log_rows)
            files = {name: sha256_file(tmp / name) for name in (GRADS, TRAIN_LOG)}
            meta = json.loads(json.dumps(profile.meta, default=str))  # as it will read back
            manifest = {"key": key, "files": files, "meta": meta, "meta_sha256": _digest(key, files, meta)}
            atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")

        # an entry already there is damaged (load said so, under the lock): kept for a post-mortem
        atomic_dir(self.entry(key), build, aside=self.root / f".{key}.corrupt-{time.time_ns()}")

    def _count(self, key: str, event: str, profile: Profile, seconds: float) -> None:
        row = {"key": key, "event": event, "computed_by": profile.meta.get("computed_by"),
               "host": socket.gethostname(), "pid": os.getpid(), "seconds": round(seconds, 3), "time": time.time()}
        append_jsonl(self.root / "computations.jsonl", row)  # one short O_APPEND write: lines never interleave


def _digest(key: str, files: dict, meta: dict) -> str:
    """The checksum over everything a later job reads from the manifest, not only the files."""
    return hashlib.sha256(json.dumps({"key": key, "files": files, "meta": meta}, sort_keys=True).encode()).hexdigest()


def from_run(path: str | Path, num_layers: int | None = None, signal: str = "lora") -> tuple[list[float], ProfileInfo]:
    """S(l) from a finished job's records: its profile phase if it had one, else its training (a profile
    only when that job trained at uniform rank). Only reads; every problem is an InputError naming it."""
    where = f"profile.from_run={str(path)!r}"
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{where}: no such folder; pass the folder of a finished job (it holds result.json "
                         f"and {GRADS})")
    try:
        job = read_result(folder)
    except RecordError as exc:  # its message names the file and the fix
        raise InputError(f"{where}: {exc}") from None
    if not (folder / GRADS).is_file():
        raise InputError(f"{where} has no gradient records ({GRADS}); use a job that trained or profiled")
    try:
        grads = read_grad_records(folder / GRADS)
        phases = set(grads["phase"].tolist())
    except (OSError, KeyError, ArrowException) as exc:
        raise InputError(f"{where}: {folder / GRADS} is unreadable ({type(exc).__name__}); rerun that job "
                         "with force=true or use another") from None
    if "profile" in phases:
        phase = "profile"
    elif "train" in phases and job.job.strategy == "uniform":
        phase = "train"
    else:
        raise InputError(f"{where}: a {job.job.strategy} job's training gradients are no uniform-rank profile; "
                         "use a uniform job or one that profiled")
    try:
        importance = layer_importance(grads, phase, signal=signal).tolist()
    except (KeyError, ValueError) as exc:
        if signal == "full_weight" and "no full_weight" in str(exc):
            raise InputError(f"{where}: that job recorded no full-weight gradients (profile.full_weight was "
                             "off); use profile.signal=lora, or a job run with profile.full_weight=true") from None
        raise InputError(f"{where}: {folder / GRADS} lacks what a profile needs ({type(exc).__name__}: {exc}); "
                         "rerun that job with force=true or use another") from None
    if num_layers is not None and len(importance) != num_layers:
        raise InputError(f"{where} profiled {len(importance)} layers, this model has {num_layers}; use a job "
                         "of the same model")
    steps = int(len(np.unique(grads["step"][grads["phase"] == phase])))
    info = ProfileInfo(source="from_run", steps=steps, phase=phase, path=str(folder.resolve()), signal=signal,
                       key=job.profile.key if job.profile else None, sha256=sha256_file(folder / GRADS),
                       computed_by=str(folder.resolve()))
    return importance, info
