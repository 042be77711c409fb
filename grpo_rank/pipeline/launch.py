"""One job across several processes of one node, data parallel: `distributed.processes=N`.

    python -m grpo_rank.run distributed.processes=2 grpo.per_device_batch_size=4   # 2 CPU processes (gloo)
    python -m grpo_rank.run -m resources=gpu8 experiment=paper strategy=uniform,proportional seed=0,1,2

The job's own process (the one Hydra, joblib or Slurm started) spawns N workers with torch's elastic
launcher (what `torchrun` and `accelerate launch` use), so the command is the same on a laptop and on a
Slurm node. Each worker runs the whole job (job.run_job); accelerate, through the Trainer, builds the
process group from the launcher's environment: gloo on CPU, nccl on GPUs, one GPU per worker. DDP averages
the gradient over the workers before the optimizer step, so the profiler reads the same averaged gradient
on every rank; the frozen weights' gradients (profile.full_weight) are averaged the same way before their
norms are taken (gradnorm.py). Rank 0 alone writes records, checkpoint records, profile cache entries and
W&B, and evaluates; the other ranks end when training does.

The batch settings stay per process: N processes of grpo.per_device_batch_size=b train on N*b
completions a micro-step, like one process of 2b. Not wired in: several nodes, and sharded training
(FSDP, DeepSpeed ZeRO), whose per-module gradient norms would need a reduction across shards first.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import closing
from dataclasses import replace
from pathlib import Path

from grpo_rank.pipeline.job import run_job
from grpo_rank.runtime.distributed import WORKER_ENV, is_main, rank
from grpo_rank.runtime.threads import ThreadPlan

log = logging.getLogger(__name__)


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_threads(plan: ThreadPlan, processes: int) -> ThreadPlan:
    """Each worker's share of the job's threads: the job's cores are split, never oversubscribed."""
    return replace(plan, threads=max(1, plan.threads // processes),
                   source=f"{plan.source}, split among {processes} processes")


def launch_job(cfg, job_dir: Path, resolved: dict | None, plan: ThreadPlan):
    """Runs the job in `cfg.distributed.processes` workers on this node and returns rank 0's JobResult."""
    import torch
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from grpo_rank.errors import InputError

    n = cfg.distributed.processes
    if torch.cuda.is_available() and n > torch.cuda.device_count():
        raise InputError(f"distributed.processes={n} but this node has {torch.cuda.device_count()} GPUs; "
                         f"set distributed.processes<={torch.cuda.device_count()}")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=f"grpo-rank-{os.getpid()}",
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0,
                          monitor_interval=0.5, start_method="spawn")
    log.info("job in %d processes on this node", n)
    os.environ[WORKER_ENV] = "1"  # the spawned workers inherit it
    try:
        results = elastic_launch(config, _worker)(cfg, job_dir, resolved, worker_threads(plan, n))
    except ChildFailedError as exc:
        # rank 0 recorded its own error in result.json; a failure elsewhere is named by the launcher
        first = next(iter(exc.failures.values()))
        raise RuntimeError(f"a worker of the {n}-process job failed (rank {first.global_rank}, exit code "
                           f"{first.exitcode}); see error.txt and the job's log") from None
    finally:
        os.environ.pop(WORKER_ENV, None)  # the next job of this process (joblib) may run in one process
    return results[0]


def _worker(cfg, job_dir: Path, resolved: dict | None, plan: ThreadPlan):
    from grpo_rank.runtime import threads

    threads.apply(plan)
    fmt = f"[%(asctime)s][rank {rank()}][%(name)s][%(levelname)s] - %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt)
    if is_main():  # the job's log file, which Hydra's handler fills in the launching process only
        handler = logging.FileHandler(Path(job_dir) / "run.log")
        handler.setFormatter(logging.Formatter(fmt))
        logging.getLogger().addHandler(handler)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    from accelerate import PartialState

    from grpo_rank.runtime.device import capabilities

    PartialState(cpu=not capabilities().cuda)  # the process group, before the profile cache's first broadcast
    result = run_job(cfg, job_dir, resolved, plan)
    return result if is_main() else None
