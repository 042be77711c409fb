"""Ranks of a data-parallel job, read in every stage: who is rank 0 (writes records, evaluates), how
many ranks there are, broadcasting a decision from rank 0, averaging tensors over ranks. The workers
themselves are started by grpo_rank/pipeline/launch.py (`distributed.processes=N`).

RANK and WORLD_SIZE count only in processes that launcher started (WORKER_ENV), so a stray RANK in a
cluster's environment cannot silence a one-process job.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


WORKER_ENV = "GRPO_RANK_WORKER"  # set for the workers launch_job starts, and only for them


def rank() -> int:
    # a RANK from elsewhere (a torchrun around the command, a cluster's environment) must not silence a job
    return int(os.environ.get("RANK", 0)) if os.environ.get(WORKER_ENV) else 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1)) if os.environ.get(WORKER_ENV) else 1


def is_main() -> bool:
    """Whether this process writes: always, unless it is a worker of a multi-process job other than rank 0."""
    return rank() == 0


def share(obj=None):
    """Rank 0's `obj` on every rank (the others pass nothing); `obj` itself with one process."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist

    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_mean_(tensors: list) -> None:
    """Averages each tensor over the ranks in place, as DDP averages the parameters' gradients."""
    if world_size() == 1 or not tensors:
        return
    import torch.distributed as dist

    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(world_size())


def local_rank() -> int:
    """This process's index on its node (its GPU), from the launcher's LOCAL_RANK; 0 for a one-process job."""
    return int(os.environ.get("LOCAL_RANK", 0)) if os.environ.get(WORKER_ENV) else 0
