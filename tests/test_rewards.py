"""Rewards, table-driven: one row per completion, its expected score under every reward in REWARDS."""

from __future__ import annotations

import pytest

from grpo_rank.objective.rewards import REWARDS, completion_text

NUMBERS_0_59 = " ".join(map(str, range(60)))

CASES = [
    # text, gold, format, correctness, format_partial, correctness_partial
    ("<think>6*7=42</think><answer>42</answer>", "42", 1.0, 1.0, 1.0, 1.0),  # right, well-formed
    ("  <think>x</think>\n<answer>42</answer>\n", "42", 1.0, 1.0, 1.0, 1.0),  # whitespace around/between
    ("<think>16-3=13</think><answer>13</answer>", "18", 1.0, 0.0, 1.0, 0.0),  # wrong number, good format
    ("<think>9+9=18</think><answer>20</answer>", "18", 1.0, 0.0, 1.0, 0.25),  # computed, answered another
    ("<think></think><answer></answer>", "42", 1.0, 0.0, 1.0, 0.0),  # empty answer: well-formed, wrong
    ("<think>a</think><answer> </answer> 42", "42", 0.0, 0.0, 0.8, 0.25),  # text after; capped at 0.8
    ("</answer> 5 <answer><think></think>", "5", 0.0, 0.0, 0.8, 0.5),  # tags out of order: no strict format, partial credit
    ("<answer>42</answer><think>x</think>", "42", 0.0, 1.0, 0.8, 1.0),  # answer before think
    ("Sure! <think>x</think><answer>42</answer>", "42", 0.0, 1.0, 0.8, 1.0),  # text before the tags
    ("<think>x</think> so <answer>42</answer>", "42", 0.0, 1.0, 0.8, 1.0),  # text between the tags
    ("<think>a</think><answer>42</answer><answer>42</answer>", "42", 0.0, 1.0, 0.6, 1.0),  # tag twice
    ("<think><think>x</think><answer>42</answer>", "42", 0.0, 1.0, 0.8, 1.0),  # nested think
    ("<answer>1,000</answer>", "1000", 0.0, 1.0, 0.6, 1.0),  # thousands separator; two tags + number
    ("<answer>$18</answer>", "18", 0.0, 1.0, 0.6, 1.0),  # currency sign
    ("<answer>18.0</answer>", "18", 0.0, 1.0, 0.6, 1.0),  # trailing .0
    ("<think>x</think><answer>\\boxed{42}</answer>", "42", 1.0, 1.0, 1.0, 1.0),  # LaTeX box
    ("<think>x</think><answer>\\frac{84}{2}</answer>", "42", 1.0, 1.0, 1.0, 1.0),  # one value
    ("<think>x</think><answer>x = 42</answer>", "42", 1.0, 1.0, 1.0, 1.0),  # assignment allowed
    ("<answer>" + NUMBERS_0_59 + "</answer>", "42", 0.0, 0.0, 0.6, 0.0),  # listing 0..59: no credit
    (NUMBERS_0_59, "42", 0.0, 0.0, 0.2, 0.0),  # listing, untagged: no credit
    ("<think>40 41 42 43 44 45 46</think><answer>1</answer>", "42", 1.0, 0.0, 1.0, 0.0),  # 8 numbers
    ("<think>maybe 40, 41 or 42</think><answer>7</answer>", "42", 1.0, 0.0, 1.0, 0.25),  # few numbers
    ("<think>x</think><answer>2 \\times 42</answer>", "42", 1.0, 0.0, 1.0, 0.0),  # hostile: product
    ("<think>x</think><answer>\\gcd(12, 42)</answer>", "42", 1.0, 0.0, 1.0, 0.0),  # hostile: function
    ("<think>x</think><answer>42^{2}</answer>", "42", 1.0, 0.0, 1.0, 0.0),  # hostile: power
    ("<think>x</think><answer>42 + 0</answer>", "42", 1.0, 0.0, 1.0, 0.0),  # hostile: sum
    ("<think>x</think><answer>40 42</answer>", "42", 1.0, 0.0, 1.0, 0.0),  # hostile: two numbers
    ("<think>x</think><answer>41, 42, 43</answer>", "42", 1.0, 0.0, 1.0, 0.0),  # hostile: list
    ("<think>x</think><answer>\\sqrt{42}</answer>", "42", 1.0, 0.0, 1.0, 0.0),  # hostile: root
    ("<think>42</think><answer>2 \\times 42</answer>", "42", 1.0, 0.0, 1.0, 0.25),  # gold in the think
    ("So she makes 18 dollars.", "18", 0.0, 0.0, 0.2, 0.5),  # right, untagged: half credit
    ("So it is 2 \\times 18", "18", 0.0, 0.0, 0.2, 0.0),  # untagged expression: nothing
    ("9 + 9 = 18, so the answer is 20", "18", 0.0, 0.0, 0.2, 0.25),  # computed, answered another
    ("<answer>18", "18", 0.0, 0.0, 0.4, 0.5),  # cut off before </answer>: untagged
    ("I am not sure.", "18", 0.0, 0.0, 0.0, 0.0),  # no number
    ("", "18", 0.0, 0.0, 0.0, 0.0),  # empty completion
    ("<answer>eighteen</answer>", "18", 0.0, 0.0, 0.4, 0.0),  # words are not parsed as numbers
    ("<answer>__import__('os').system('rm -rf /')</answer>", "18", 0.0, 0.0, 0.4, 0.0),  # code, never run
    ("<answer>eval('6*7')</answer>", "42", 0.0, 0.0, 0.6, 0.0),  # code with digits, never run
    ("<answer>" + "9" * 500 + "</answer>", "18", 0.0, 0.0, 0.6, 0.0),  # absurdly long answer: unread
    ("<answer>9^{9^{9^{9}}}</answer>", "42", 0.0, 0.0, 0.6, 0.0),  # power tower: parsed, not computed
    (" 43Avaw 12\ufffd\x16 31P", "30", 0.0, 0.0, 0.2, 0.0),  # tiny-model garbage (from the golden run)
    ("<answer>" * 10_000 + "x", "42", 0.0, 0.0, 0.0, 0.0),  # 10k unclosed tags, no number
    ("<think>42</think><answer>1</answer>" + " " * 20_000, "42", 1.0, 0.0, 1.0, 0.0),  # > 20k chars: no 0.25
]
NAMES = ("format", "correctness", "format_partial", "correctness_partial")


@pytest.mark.parametrize("text, gold, fmt, correct, fmt_partial, correct_partial", CASES)
def test_reward_table(text, gold, fmt, correct, fmt_partial, correct_partial):
    got = {name: REWARDS[name]([text], answer=[gold])[0] for name in NAMES}
    assert got == pytest.approx(dict(zip(NAMES, (fmt, correct, fmt_partial, correct_partial))))


def test_registry_names_and_function_names():
    assert set(REWARDS) == set(NAMES)
    # TRL logs each reward under its function's name
    assert {f.__name__ for f in REWARDS.values()} == {f"{n}_reward" for n in NAMES}


def test_conversational_and_plain_completions_agree():
    text = "<think>x</think><answer>7</answer>"
    chat = [{"role": "assistant", "content": text}]
    for name, fn in REWARDS.items():
        assert fn([text, chat], answer=["7", "7"]) == [1.0, 1.0], name
    assert completion_text(chat) == text and completion_text(text) == text


def test_batch_keeps_order_and_extra_columns_are_ignored():
    completions = ["<answer>3</answer>", "<answer>4</answer>", "no"]
    got = REWARDS["correctness"](completions, answer=["4", "4", "4"], prompt=["p"] * 3, id=["a", "b", "c"])
    assert got == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("experiment, names", [("paper", ("format", "correctness")),
                                               ("cpu_study", ("format_partial", "correctness_partial"))])
def test_the_experiments_score_the_table_as_their_rewards_say(experiment, names):
    """The composed experiment's `grpo.rewards` (what TRL gets, with its weights) on the tricky table:
    the study's binary rewards at equal weight give 2 only for a right, well-formed reply, 1 for a
    well-formed wrong or a right malformed one, nothing for out-of-order tags, number lists or untagged
    answers; the CPU study's partial credit is the explicit option, never reaching a well-formed score."""
    from grpo_rank.training.train import reward_functions
    from tests.conftest import typed

    g = typed(f"experiment={experiment}").grpo
    assert tuple(g.rewards) == names and set(g.rewards.values()) == ({1.0} if experiment == "paper" else {0.5, 1.0})
    column = {n: i for i, n in enumerate(NAMES)}
    for text, gold, *scores in CASES:
        got = sum(w * fn([text], answer=[gold])[0] for fn, w in zip(reward_functions(g), g.rewards.values()))
        want = sum(w * scores[column[n]] for n, w in g.rewards.items())
        assert got == pytest.approx(want), text[:60]
        if experiment == "paper":
            assert got == 2.0 * (scores[0] == scores[1] == 1.0) + 1.0 * ((scores[0] + scores[1]) == 1.0)
