"""Reward functions in TRL's form, `(completions, **dataset_columns) -> list[float]`, chosen by the
names in the config's `grpo.rewards` (name -> weight) from `REWARDS`. Correctness is decided by
`answers.judge`, the same strict checker evaluation uses, so what is rewarded is what is scored.
Model text is only ever parsed, never evaluated; every reward runs in time linear in the reply.

`text` is the completion (a plain string, or the last message's content in TRL's conversational
format). The four rewards, exactly:

- `format` (the study's): 1.0 iff `text`, without surrounding whitespace, is
  `<think>...</think><answer>...</answer>` with only whitespace between `</think>` and `<answer>`
  and each of the four tags exactly once; the contents are free and may be empty (an empty answer is
  well-formed and wrong). Else 0.0. `</answer> 5 <answer><think></think>` scores 0.0.
- `correctness` (the study's): 1.0 iff the reply has a tagged answer (see `answers.judge`: the last
  closed `<answer>...</answer>`) that is one numeric value equal to the gold; else 0.0. An untagged
  number earns nothing here.
- `format_partial` (CPU demo: keeps a weak model's groups from being all-equal, i.e. from zero
  advantage): 1.0 when `format` is 1.0; otherwise 0.2 for each of the four tags present exactly once
  plus 0.2 when the text holds a number (the answer is a number), capped at 0.8, so tags out of order
  or surrounded by other text never reach the well-formed score.
- `correctness_partial` (CPU demo): 1.0 when the tagged answer is correct; 0.5 when the reply has no
  closed answer tag and its untagged answer (last `\\boxed{}`, else the last number with the math
  around it, judged strictly) is correct; 0.25 when the gold value is among the number tokens
  outside the judged answer (computed, then not given as the answer), the reply holds at most
  MAX_PARTIAL_NUMBERS (6) distinct number tokens (NUMBER_RE: optional `-` and `$`, digits and
  commas, decimals) and at most MAX_PARTIAL_CHARS (20,000) characters; 0.0 otherwise. The token
  cap keeps listing numbers (`0 1 2 ... 59`) from earning credit; a reply can still list up to 6
  guesses for 0.25, well under answering (0.5 or 1.0).

The partial rewards score ordinary completions as before the strict checker (checked on the tiny
model's golden-run completions); they differ on the holes: tags out of order or wrapped in other
text (was up to 1.0, now at most 0.8), number lists (was 0.25), expressions that contain the gold
(`2 \\times 42` was correct), and on untagged numbers glued to letters or operators (`x42`, `42!`).
"""

from __future__ import annotations

import re
from typing import Callable

from grpo_rank.objective.answers import Judgement, judge, parse_answer, parse_gold

__all__ = ["REWARDS", "Judgement", "completion_text", "judge", "format_score", "format_partial_score",
           "correctness_score", "correctness_partial_score"]

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")  # a number token: linear, never backtracks far
DIGIT_RE = re.compile(r"\d")  # "holds a number": NUMBER_RE matches iff a digit is present; cheaper to scan
MAX_PARTIAL_NUMBERS = 6
MAX_PARTIAL_CHARS = 20_000  # longer replies earn no 0.25: bounds the one scan that grows with the reply


def completion_text(completion) -> str:
    """TRL passes plain strings, or a list of messages in the conversational format."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def well_formed(text: str) -> bool:
    """`<think>...</think>` then `<answer>...</answer>`, each tag once, only whitespace around and
    between them. Index arithmetic, not a regex: linear on any input."""
    s = text.strip()
    if any(s.count(t) != 1 for t in TAGS) or not (s.startswith("<think>") and s.endswith("</answer>")):
        return False
    think_end, answer_start = s.index("</think>") + len("</think>"), s.index("<answer>")
    return think_end <= answer_start and not s[think_end:answer_start].strip()


def format_score(text: str) -> float:
    return 1.0 if well_formed(text) else 0.0


def format_partial_score(text: str) -> float:
    if well_formed(text):
        return 1.0
    return min(0.8, 0.2 * sum(text.count(t) == 1 for t in TAGS) + 0.2 * bool(DIGIT_RE.search(text)))


def correctness_score(text: str, gold: str) -> float:
    j = judge(text, gold)
    return 1.0 if j.correct and j.tagged else 0.0


def _gold_elsewhere(text: str, j: Judgement, gold: str) -> bool:
    """The gold value among the reply's numbers outside the judged answer, in a reply of few numbers."""
    if len(text) > MAX_PARTIAL_CHARS:
        return False
    numbers = NUMBER_RE.findall(text)
    distinct = set(numbers)
    if len(distinct) > MAX_PARTIAL_NUMBERS:
        return False
    target = parse_gold(gold)
    hits = [n for n in distinct if parse_answer(n, unit_words=False) == target]
    if not hits:
        return False
    # outside = in the reply more often than in the answer: the answer's edges sit next to a tag, a
    # brace or a non-number character, so no token straddles them (a token cut where an over-long
    # run meets its window only counts as inside: less credit, never more)
    start, end = j.span
    inside = NUMBER_RE.findall(text, start, end) if end > start else []
    return any(numbers.count(n) > inside.count(n) for n in hits)


def correctness_partial_score(text: str, gold: str) -> float:
    j = judge(text, gold)
    if j.correct:
        return 1.0 if j.tagged else 0.5
    return 0.25 if _gold_elsewhere(text, j, gold) else 0.0


def format_reward(completions, **kwargs) -> list[float]:
    return [format_score(completion_text(c)) for c in completions]


def correctness_reward(completions, answer, **kwargs) -> list[float]:
    return [correctness_score(completion_text(c), str(g)) for c, g in zip(completions, answer)]


def format_partial_reward(completions, **kwargs) -> list[float]:
    return [format_partial_score(completion_text(c)) for c in completions]


def correctness_partial_reward(completions, answer, **kwargs) -> list[float]:
    return [correctness_partial_score(completion_text(c), str(g)) for c, g in zip(completions, answer)]


REWARDS: dict[str, Callable[..., list[float]]] = {
    "format": format_reward,
    "correctness": correctness_reward,
    "format_partial": format_partial_reward,
    "correctness_partial": correctness_partial_reward,
}
# the rewards that compare with the gold answer through `judge`: a gold that is not one number is a data
# error for them (preflight checks a dataset's golds before training with them)
NUMBER_GOLD = frozenset({"correctness", "correctness_partial"})
