"""The training commands start again once with glibc's allocator set (runtime/malloc.py); its speed is shown by
`make bench` (benchmarks/bench_malloc.py), not here.

    python -m pytest -q tests/test_malloc.py
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from grpo_rank.runtime import malloc
from tests.conftest import ROOT

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
PROBE = ("import os; from grpo_rank.runtime import malloc; print('pid', os.getpid()); malloc.restart_tuned(); "
         "print('pad', os.environ.get('MALLOC_TOP_PAD_'))")


@pytest.mark.parametrize("env, system, libc, expected", [
    ({}, "Linux", "glibc", True),
    ({"MALLOC_TRIM_THRESHOLD_": "0"}, "Linux", "glibc", False),  # the user's own setting is kept
    ({malloc.OPT_OUT: "glibc"}, "Linux", "glibc", False),
    ({}, "Linux", "", False),  # musl and others: the variables mean nothing there
    ({}, "Darwin", "", False),
    (malloc.SETTINGS, "Linux", "glibc", False),  # the started-again process: never a second time
])
def test_when_a_process_starts_again(env, system, libc, expected):
    assert malloc.wanted(env, system, libc) is expected


def probe(env_extra: dict) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in malloc.SETTINGS and k != malloc.OPT_OUT}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\n")[:-1]


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_the_process_starts_again_once_with_the_settings():
    lines = probe({})
    assert len(lines) == 3 and lines[0] == lines[1]  # the same process (exec), started once more
    assert lines[2] == f"pad {malloc.SETTINGS['MALLOC_TOP_PAD_']}"


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
@pytest.mark.parametrize("env_extra, pad", [({"MALLOC_TOP_PAD_": "4096"}, "4096"), ({malloc.OPT_OUT: "glibc"}, "None")])
def test_a_user_setting_or_the_opt_out_runs_as_it_is(env_extra, pad):
    lines = probe(env_extra)
    assert len(lines) == 2 and lines[1] == f"pad {pad}"


def test_the_run_command_starts_again_and_still_refuses_bad_input_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in malloc.SETTINGS}
    proc = subprocess.run([sys.executable, "-m", "grpo_rank.run", "lora.r=0", f"hydra.run.dir={tmp_path}/job"],
                          cwd=tmp_path, env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    refusals = [line for line in proc.stderr.splitlines() if line.startswith("grpo-rank:")]
    assert len(refusals) == 1 and "lora.r" in refusals[0], proc.stderr

