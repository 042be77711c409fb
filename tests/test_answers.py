"""The strict answer checker, table-driven: what `judge` reads as the answer, and whether it is right.
Hostile inputs (power towers, huge numbers, 200k-char replies, deep nesting) must come back fast in
the main thread and in a worker thread; the real target (< 0.1 s) is checked by `make bench`."""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import pytest

from benchmarks.bench_answers import hostile_corpus
from grpo_rank.objective.answers import judge, parse_answer, parse_gold

JUDGE_CASES = [
    # reply, gold, answer, tagged, correct
    ("<answer>42</answer>", "42", "42", True, True),  # the plain case
    ("<answer>42.0</answer>", "42", "42.0", True, True),  # trailing .0
    ("<answer>\\boxed{42}</answer>", "42", "\\boxed{42}", True, True),  # boxed inside the tags
    ("<answer>$42</answer>", "42", "$42", True, True),  # currency
    ("<answer>\\$42.00</answer>", "42", "\\$42.00", True, True),  # escaped currency, cents
    ("<answer>$42$</answer>", "42", "$42$", True, True),  # inline math
    ("<answer>\\(42\\)</answer>", "42", "\\(42\\)", True, True),  # inline math, other delimiters
    ("<answer>42,000</answer>", "42000", "42,000", True, True),  # thousands separator
    ("<answer>42000</answer>", "42,000", "42000", True, True),  # separator on the gold side
    ("<answer>42\\,000</answer>", "42000", "42\\,000", True, True),  # LaTeX thin-space separator
    ("<answer>\\frac{84}{2}</answer>", "42", "\\frac{84}{2}", True, True),  # one value as a fraction
    ("<answer>\\dfrac{ 84 }{ 2 }</answer>", "42", "\\dfrac{ 84 }{ 2 }", True, True),  # dfrac, spaces
    ("<answer>84/2</answer>", "42", "84/2", True, True),  # plain fraction: one value
    ("<answer>1/2</answer>", "0.5", "1/2", True, True),  # rationals compare exactly
    ("<answer>-3</answer>", "-3", "-3", True, True),  # negative
    ("<answer>\u22123</answer>", "-3", "\u22123", True, True),  # unicode minus
    ("<answer>-$3</answer>", "-3", "-$3", True, True),  # sign before currency
    ("<answer>x = 42</answer>", "42", "x = 42", True, True),  # assignment: the value after '='
    ("<answer>6 \\times 7 = 42</answer>", "42", "6 \\times 7 = 42", True, True),  # stated result
    ("<answer>42 dollars</answer>", "42", "42 dollars", True, True),  # trailing unit word
    ("<answer>42\\text{ dollars}</answer>", "42", "42\\text{ dollars}", True, True),  # LaTeX unit
    ("<answer>42%</answer>", "42", "42%", True, True),  # percent is a unit: 42% has the value 42
    ("<answer>42.</answer>", "42", "42.", True, True),  # sentence full stop
    ("<answer>(42)</answer>", "42", "(42)", True, True),  # bracketed
    ("<answer>2 \\times 42</answer>", "42", "2 \\times 42", True, False),  # hostile: product
    ("<answer>\\gcd(12, 42)</answer>", "42", "\\gcd(12, 42)", True, False),  # hostile: function
    ("<answer>42^{2}</answer>", "42", "42^{2}", True, False),  # hostile: power
    ("<answer>42 + 0</answer>", "42", "42 + 0", True, False),  # hostile: sum equal to the gold
    ("<answer>40 42</answer>", "42", "40 42", True, False),  # hostile: two numbers
    ("<answer>41, 42, 43</answer>", "42", "41, 42, 43", True, False),  # hostile: a list
    ("<answer>\\sqrt{42}</answer>", "42", "\\sqrt{42}", True, False),  # hostile: root
    ("<answer>42!</answer>", "42", "42!", True, False),  # factorial, not an exclamation
    ("<answer>42 = 6 \\times 7</answer>", "42", "42 = 6 \\times 7", True, False),  # judged on the rhs
    ("<answer>x != 42</answer>", "42", "x != 42", True, False),  # an inequality is no value
    ("<answer>x >= 42</answer>", "42", "x >= 42", True, False),  # a bound is no value
    ("<answer>42 or 43</answer>", "42", "42 or 43", True, False),  # alternatives
    ("<answer>not 42</answer>", "42", "not 42", True, False),  # leading words are not peeled
    ("<answer>42\\text{ or more}</answer>", "42", "42\\text{ or more}", True, False),  # stop word in \text
    ("<answer>42 squared</answer>", "42", "42 squared", True, False),  # operator word
    ("<answer>42x</answer>", "42", "42x", True, False),  # a term, not a value
    ("<answer>4,2</answer>", "42", "4,2", True, False),  # not a thousands group: a list
    ("<answer>4.2e1</answer>", "42", "4.2e1", True, False),  # scientific notation is not read
    ("<answer>-42</answer>", "42", "-42", True, False),  # wrong sign
    ("<answer>forty-two</answer>", "42", "forty-two", True, False),  # words are not numbers
    ("<answer>eval('6*7')</answer>", "42", "eval('6*7')", True, False),  # code is parsed, never run
    ("<answer>__import__('os').system('rm -rf /')</answer>", "0",
     "__import__('os').system('rm -rf /')", True, False),  # code, no digit in it
    ("<answer>\\frac{1}{0}</answer>", "0", "\\frac{1}{0}", True, False),  # no division by zero
    ("<answer>" + "9" * 500 + "</answer>", "18", "9" * 100 + "...", True, False),  # too long: unread
    ("<answer></answer>", "42", None, True, False),  # empty answer: a parse failure
    ("<answer>41</answer> <answer>42</answer>", "42", "42", True, True),  # the last closed answer
    ("<answer>42</answer> </answer>", "42", "42", True, True),  # a stray closer after it
    ("<answer><answer>42</answer>", "42", "42", True, True),  # unclosed opener before the last
    ("<answer>42", "42", "42", False, True),  # cut off before </answer>: untagged last number
    ("So she makes 42 dollars.", "42", "42", False, True),  # untagged: the last number
    ("9 + 9 = 18, so the answer is 20", "18", "20", False, False),  # untagged: the last number only
    ("the answer is 2 \\times 42", "42", "2 \\times 42", False, False),  # untagged expression
    ("I got 41, 42, 43.", "42", "41, 42, 43.", False, False),  # untagged list
    ("6 \\times 7 = 42", "42", "42", False, True),  # untagged: after the last '='
    ("x != 42", "42", "42", False, False),  # untagged bound
    ("x42", "42", "42", False, False),  # letter glued to the number
    ("The answer is \\boxed{42}. Hope 1 helps", "42", "42", False, True),  # untagged: last \boxed wins
    ("I am not sure.", "18", None, False, False),  # no number: a parse failure
    ("", "18", None, False, False),  # empty reply
]


@pytest.mark.parametrize("reply, gold, answer, tagged, correct", JUDGE_CASES)
def test_judge_table(reply, gold, answer, tagged, correct):
    j = judge(reply, gold)
    assert (j.answer, j.tagged, j.correct) == (answer, tagged, correct)


@pytest.mark.parametrize("text, value", [
    ("42", Fraction(42)), (".5", Fraction(1, 2)), ("1,234.5", Fraction(2469, 2)), ("+7", Fraction(7)),
    ("\\boxed{\\frac{3}{4}}", Fraction(3, 4)), ("$\\$-5$", Fraction(-5)), ("{42}", Fraction(42)),
    ("42 miles per hour", Fraction(42)), ("42 apples apples apples apples", None), ("-$-5", None),
    ("1 1/2", None), ("42\\cdot 1", None), ("", None), ("$", None), ("\\boxed{4}{2}", None),
])
def test_parse_answer_grammar(text, value):
    assert parse_answer(text) == value


def test_gold_must_be_a_number():
    assert parse_gold("1,234") == 1234 and parse_gold(" 18 ") == 18
    with pytest.raises(ValueError, match="not a single number"):
        judge("<answer>1</answer>", "eighteen")


def _timed_corpus() -> list[tuple[str, float, bool]]:
    out = []
    for name, reply, gold in hostile_corpus():
        t0 = time.perf_counter()
        j = judge(reply, gold)
        out.append((name, time.perf_counter() - t0, j.correct))
    return out


# The corpus entries that do hold one right answer; every other hostile input must be judged wrong.
HOSTILE_RIGHT = {"200k chars, 10k unclosed <answer> with numbers", "10k unclosed then one closed",
                 "deeply nested braces", "100k spaces then a number", "lone surrogates"}


def test_hostile_inputs_are_fast_and_wrong_in_any_thread():
    results: dict[str, list] = {}
    worker = threading.Thread(target=lambda: results.setdefault("worker", _timed_corpus()))
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the checker hung off the main thread"
    results["main"] = _timed_corpus()
    for where, rows in results.items():
        assert len(rows) == len(hostile_corpus())
        for name, seconds, correct in rows:
            assert seconds < 1.0, (where, name, seconds)  # generous here; the bench holds < 0.1 s
            assert correct == (name in HOSTILE_RIGHT), (where, name)
