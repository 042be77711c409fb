"""grpo-rank's default sweeper (conf/hydra/sweeper/ordered.yaml): Hydra's basic sweeper, with the jobs that
read a profile launched after the others (the rule and why: grpo_rank/sweep/order.py). It lives here because
Hydra instantiates plugins only from the `hydra_plugins` namespace package."""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from grpo_rank.sweep.order import profile_readers_last


class OrderedSweeper(BasicSweeper):
    @staticmethod
    def split_arguments(overrides, max_batch_size):
        jobs = profile_readers_last([job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch])
        size = len(jobs) if max_batch_size in (None, -1) else max_batch_size
        return [jobs[i:i + size] for i in range(0, len(jobs), size)]
