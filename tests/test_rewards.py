"""Rewards, table-driven: one row per case, the expected (format, correctness) scores."""

from __future__ import annotations

import pytest

from grpo_rank.rewards import (correctness_reward, correctness_score, extract_answer, format_reward,
                               format_score)

CASES = [
    # text, gold, format, correctness
    ("<think>16-3-4=9, 9*2=18</think><answer>18</answer>", "18", 1.0, 1.0),  # right, whole format
    ("<think>16-3=13</think><answer>13</answer>", "18", 1.0, 0.0),  # wrong number, good format
    ("<answer>1,000</answer>", "1000", 0.6, 1.0),  # thousands separator; two tags + a number
    ("<answer>$18</answer>", "18", 0.6, 1.0),  # currency sign
    ("<answer>18.0</answer>", "18", 0.6, 1.0),  # trailing .0
    ("So she makes 18 dollars.", "18", 0.2, 0.5),  # right, untagged: half credit
    ("I am not sure.", "18", 0.0, 0.0),  # unparseable
    ("9 + 9 = 18, so the answer is 20", "18", 0.2, 0.25),  # computed the right number, answered another
    ("<think>9+9=18</think><answer>20</answer>", "18", 1.0, 0.25),
    ("<answer>eighteen</answer>", "18", 0.4, 0.0),  # words are not parsed as numbers
    ("<answer>__import__('os').system('rm -rf /')</answer>", "18", 0.4, 0.0),  # looks like code: parsed, never run
    ("<answer>open('x').read()</answer>", "0", 0.4, 0.0),
    ("<think>a</think><answer>18</answer><answer>18</answer>", "18", 0.6, 1.0),  # repeated tag breaks format
    ("<answer>" + "9" * 500 + "</answer>", "18", 0.6, 0.0),  # absurdly long answer: wrong, not parsed
]


@pytest.mark.parametrize("text, gold, fmt, correct", CASES)
def test_reward_table(text, gold, fmt, correct):
    assert format_score(text) == pytest.approx(fmt)
    assert correctness_score(text, gold) == pytest.approx(correct)


def test_conversational_and_plain_completions_agree():
    text = "<think>x</think><answer>7</answer>"
    plain = correctness_reward([text], answer=["7"])
    chat = correctness_reward([[{"role": "assistant", "content": text}]], answer=["7"])
    assert plain == chat == [1.0]
    assert format_reward([text, [{"role": "assistant", "content": text}]]) == [1.0, 1.0]


def test_extract_answer_prefers_the_tag():
    ex = extract_answer("I think 12. <answer>14</answer> then 99")
    assert ex.answer == "14" and ex.tagged
    ex = extract_answer("first 3 then 12")
    assert ex.answer == "12" and not ex.tagged
    assert extract_answer("nothing").answer is None
