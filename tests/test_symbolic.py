"""eval.scoring=math_verify (symbolic.py): the math-verify library's judgement of replies, table-driven,
safe off the main thread (the library's own timeouts are signals, which raise there), bounded in time by
its worker process, and named in the record and the report."""

from __future__ import annotations

import threading

import pytest

from grpo_rank.errors import InputError
from grpo_rank.objective import symbolic
from grpo_rank.objective.answers import counts, judge
from grpo_rank.objective.symbolic import MathVerify

pytest.importorskip("math_verify")


@pytest.fixture(scope="module")
def mv():
    with MathVerify() as verifier:
        yield verifier


# (reply, gold, the answer math-verify reads, correct)
CASES = [
    ("<think>half</think><answer>\\frac{1}{2}</answer>", "0.5", "\\frac{1}{2}", True),
    ("<answer>18 dollars</answer>", "18", "18", True),
    ("so it is $\\boxed{\\dfrac{\\sqrt3}{2}}$", "\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{3}}{2}", True),
    ("the interval is \\boxed{(1, 2)}", "(1, 2)", "(1, 2)", True),
    ("\\boxed{1 + x^2}", "x^2+1", "1 + x^2", True),
    ("\\boxed{2 \\times 9}", "18", "2 \\times 9", True),  # an expression equal to the gold counts here, unlike `any`
    ("<answer>17</answer> and then \\boxed{18}", "18", "17", False),  # the tagged answer is the one judged
    ("<answer>\\sqrt{2}</answer>", "1.41", "\\sqrt{2}", False),  # equal to 1.41 only rounded
    ("no answer at all", "18", None, False),
    ("<answer></answer>", "18", None, False),
]


@pytest.mark.parametrize("reply, gold, answer, correct", CASES)
def test_math_verify_known_answers(mv, reply, gold, answer, correct):
    j = mv.judge(reply, gold)
    assert (j.answer, j.correct, counts(j, "math_verify")) == (answer, correct, correct)
    assert j.tagged == ("<answer>" in reply)


def test_where_the_scorers_differ():
    """`any` wants one number; math-verify takes what equals it: the same reply, two verdicts."""
    reply = "\\boxed{2 \\times 9}"
    assert not counts(judge(reply, "18"), "any")
    with MathVerify() as mv:
        assert counts(mv.judge(reply, "18"), "math_verify")


def test_safe_off_the_main_thread(mv):
    """The library's default timeouts use signal.alarm, which raises outside the main thread; ours do not."""
    from math_verify import parse

    got, raised = [], []

    def work():
        got.append(mv.judge("\\boxed{\\frac{3}{6}}", "1/2"))
        try:
            parse("$1$", parsing_timeout=5, raise_on_error=True)
        except ValueError as exc:
            raised.append(str(exc))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert got and got[0].correct
    assert raised and "threaded environment" in raised[0]


def test_a_reply_that_never_finishes_is_wrong_and_the_worker_replaced():
    """10^{10^{10}} against 18 does not return without a timeout (measured); the worker is killed."""
    with MathVerify(timeout_s=2) as mv:
        j = mv.judge("\\boxed{10^{10^{10}}}", "18")
        assert (j.answer, j.correct, mv.timed_out) == (None, False, 1)
        assert mv.judge("\\boxed{18}", "18").correct  # a fresh worker judges the next reply


def test_gold_answers_math_verify_cannot_read(mv):
    assert mv.gold_problem("\\frac{\\sqrt{3}}{2}") is None
    assert mv.gold_problem("}{") == "math-verify finds no answer in it"


def test_without_the_library_the_setting_is_one_line(monkeypatch):
    from grpo_rank.config.schema import ConfigError
    from grpo_rank.config.validate import validate
    from tests.conftest import typed

    monkeypatch.setattr(symbolic, "missing", lambda: True)  # what find_spec says when it is not installed
    with pytest.raises(ConfigError, match=r"eval.scoring='math_verify': needs the math-verify package.*pip install"):
        validate(typed("eval.scoring=math_verify"))
    with pytest.raises(InputError, match="pip install -e '.\\[math\\]'"):
        MathVerify()
