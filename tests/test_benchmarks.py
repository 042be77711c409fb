"""The benchmarks start and print their targets (at smoke size: their numbers are `make bench`'s business, not
a test's). A benchmark that no longer imports what it times fails here, not in someone's `make bench`.

    python -m pytest -q tests/test_benchmarks.py
"""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, run_cli


def test_the_report_benchmark_runs_on_small_generated_sweeps(tmp_path):
    proc = run_cli(["benchmarks.bench_report", "--jobs", "2", "3", "--steps", "4", "--layers", "3", "--modules", "2"],
                   cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 jobs:" in proc.stdout and "3 vs 2 jobs: time" in proc.stdout and "(target <= 1.5x)" in proc.stdout


def test_the_allocator_benchmark_compares_both_arms_on_the_tiny_model(tmp_path):
    proc = run_cli(["benchmarks.bench_malloc", "--repeats", "1", "model=tiny", "grpo.max_completion_length=8",
                    "eval.max_new_tokens=8", "task.train_size=64"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tuned / glibc training time:" in proc.stdout
    assert "gradient records equal to the bit: True" in proc.stdout  # the allocator changes no number


@pytest.mark.slow
def test_the_memory_benchmark_measures_every_arm_on_the_tiny_model(tmp_path):
    proc = run_cli(["benchmarks.bench_memory", "--models", "tiny"], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for arm in ("off", "on", "off-2", "on-2", "on-fp32buffer", "ckpt-off", "ckpt-on"):
        assert f"\n  {arm} " in proc.stdout, proc.stdout
    assert "largest relative norm difference" in proc.stdout


@pytest.mark.slow
def test_the_step_benchmark_prints_the_stages_and_its_targets(tmp_path):
    proc = run_cli(["benchmarks.bench_step", "model=tiny", "steps=2", "repeats=1"], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "full-weight hooks:" in proc.stdout and "signal off / plain TRL+PEFT step:" in proc.stdout
