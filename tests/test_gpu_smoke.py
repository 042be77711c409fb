"""scripts/gpu_smoke.sh --cpu: the GPU smoke check's pipeline end to end on the CPU (the tiny model, a few
steps), so that the script a GPU session runs is known to work before that session pays for a machine.

    OMP_NUM_THREADS=1 python -m pytest tests/test_gpu_smoke.py -q      # ~20 s of CPU
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_the_smoke_check_runs_on_the_cpu():
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", "scripts/gpu_smoke.sh", "--cpu"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, (out + proc.stderr)[-3000:]
    assert out.strip().splitlines()[-1] == "gpu smoke: ok"
    built = re.search(r"tiny: .* ([\d,]+) trainable \(planned ([\d,]+)\)", out)
    assert built and built.group(1) == built.group(2)
    assert re.search(r"tiny: step time median [\d.]+ s over 3 steps", out)
    assert "peak GPU memory n/a (CPU)" in out and "W norms" in out
