"""`eval.scoring=math_verify`: answers judged by the math-verify library (Hugging Face's checker, which
lighteval and open-r1 score MATH-style answers with), so that any math answer counts (fractions,
roots, intervals, sets, expressions, equations) and accuracies compare with theirs.

    with MathVerify() as mv:
        judgement = mv.judge(reply, gold)   # answers.Judgement (value None); mv.timed_out counts give-ups
        mv.gold_problem(gold)               # None, or why math-verify cannot read a gold answer

What is judged: the reply's tagged answer (inside the last closed `<answer>...</answer>`) when it has
one, else the whole reply, from which math-verify takes its final answer itself (the last `\\boxed{}`,
a "final answer is" statement, else the last expression). The gold answer is parsed as `\\boxed{<gold>}`.

Threads and time: math-verify bounds each parse and comparison with signal.alarm, which works only in
a process's main thread (elsewhere it raises ValueError). It is called here with parsing_timeout=None
and timeout_seconds=None, its settings that use no signal, inside a worker process of our own, and
the bound is ours: a reply not judged within TIMEOUT_S seconds is wrong, its worker is killed and a
new one started. Without a bound, `10^{10^{10}}` against the gold 18 never returns (measured). The
worker is `python -m grpo_rank.objective.symbolic`, one JSON line per request and per answer on its
stdin and stdout: not multiprocessing, whose spawn re-runs the caller's main script and whose fork
copies a process that holds torch's threads.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import select
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from grpo_rank.errors import InputError
from grpo_rank.objective.answers import MAX_ANSWER_CHARS, Judgement, tagged_span

TIMEOUT_S = 10.0  # per reply; math-verify's own default is 5 s per parse and per comparison
START_TIMEOUT_S = 300.0  # starting the worker imports sympy and math-verify (~1 s alone; more on a busy machine)
MISSING = "eval.scoring=math_verify needs the math-verify package; pip install -e '.[math]'"


def missing() -> bool:
    """Whether math-verify is absent (found without importing it: config.validate calls this)."""
    return importlib.util.find_spec("math_verify") is None


def _parse(text: str) -> list:
    from math_verify import parse

    return parse(text, parsing_timeout=None)


@lru_cache(maxsize=4096)
def _gold(gold: str) -> list:
    return _parse(f"\\boxed{{{gold}}}")


def _judge(reply: str, gold: str) -> tuple[str | None, bool]:
    """In the worker: (the answer math-verify read, shown as text, or None; whether it equals the gold)."""
    from math_verify import verify

    span = tagged_span(reply)
    if span is not None:
        text = reply[span[0]:span[1]].strip()
        pred = (_parse(text) or _parse(f"${text}$")) if text else []
    else:
        pred = _parse(reply)
    if not pred:
        return None, False
    shown = str(pred[1] if len(pred) > 1 else pred[0])
    shown = shown if len(shown) <= MAX_ANSWER_CHARS else shown[:MAX_ANSWER_CHARS] + "..."
    try:
        return shown, bool(verify(_gold(gold), pred, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - sympy can fail on odd input in many ways; each means "not equal"
        return shown, False


def serve() -> None:
    """The worker: one JSON request a line on stdin (`["judge", reply, gold]` or `["gold", gold]`), one JSON
    answer a line on stdout; the first line out says it is ready."""
    import math_verify  # noqa: F401 - imported before "ready", so no request waits for it

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its one warning: timeouts are off (ours are on)
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever the library prints must not break the protocol
    out.write('"ready"\n')
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        answer = _judge(*request[1:]) if request[0] == "judge" else bool(_gold(request[1]))
        out.write(json.dumps(answer) + "\n")
        out.flush()


class MathVerify:
    """math-verify in one worker process, each call bounded by TIMEOUT_S (the module docstring says why)."""

    def __init__(self, timeout_s: float = TIMEOUT_S):
        if missing():
            raise InputError(MISSING)
        self.timeout_s = timeout_s
        self.timed_out = 0  # replies judged wrong because math-verify took longer than timeout_s
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> MathVerify:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc.stdin.close()
            self._proc.stdout.close()
            self._proc = None

    def _read(self, timeout_s: float):
        """The worker's next answer, or None when none came within timeout_s (the worker is then ended)."""
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
        line = self._proc.stdout.readline() if ready else ""
        if not line:  # timed out, or the worker died (out of memory on a huge number)
            self.close()
            return None
        return json.loads(line)

    def _call(self, *request):
        if self._proc is None:
            root = str(Path(__file__).resolve().parents[2])  # this package's folder, installed or not
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
            self._proc = subprocess.Popen([sys.executable, "-m", "grpo_rank.objective.symbolic"], env=env, text=True,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1)
            if self._read(START_TIMEOUT_S) != "ready":
                raise RuntimeError("the math-verify worker did not start; run python -m grpo_rank.objective.symbolic "
                                   "to see why")
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        return self._read(self.timeout_s)

    def judge(self, reply: str, gold: str) -> Judgement:
        span = tagged_span(reply)
        out = self._call("judge", reply, gold)
        if out is None:
            self.timed_out += 1
            out = (None, False)
        answer, correct = out
        return Judgement(answer, span is not None, correct, None, span or (0, 0))

    def gold_problem(self, gold: str) -> str | None:
        ok = self._call("gold", gold)
        if ok is None:
            return f"math-verify did not read it within {self.timeout_s:g} s"
        return None if ok else "math-verify finds no answer in it"


if __name__ == "__main__":
    serve()
