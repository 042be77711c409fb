"""Reward functions in TRL's form, `(completions, **dataset_columns) -> list[float]`, chosen by name
from `REWARDS`. The correctness reward and the evaluator share `extract_answer` and `is_correct`, so
what is rewarded is what is scored. Answers are compared with HF math-verify (gold first); model
text is only ever parsed, never evaluated.

Partial credit keeps a weak model's groups from being all-equal (zero advantage, zero gradient):
- format: 0.2 for each of the four tags present once and 0.2 for a number anywhere (the answer is a
  number), 1.0 for the whole format in order;
- correctness: 1.0 for the right number inside <answer>, 0.5 for the right number as the last number
  of an untagged reply, 0.25 for the right number anywhere else in the reply (it was computed, then
  not given as the answer), 0 otherwise.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
FORMAT_RE = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def completion_text(completion) -> str:
    """TRL passes plain strings, or a list of messages in the conversational format."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


@dataclass(frozen=True)
class Extraction:
    answer: str | None  # None: nothing to parse (a parse failure)
    tagged: bool  # taken from inside <answer>...</answer>


def extract_answer(text: str) -> Extraction:
    tagged = ANSWER_RE.findall(text)
    if tagged:
        return Extraction(tagged[-1].strip(), True)
    numbers = NUMBER_RE.findall(text)
    return Extraction(numbers[-1] if numbers else None, False)


MAX_ANSWER_CHARS = 100  # a final answer is short; longer text is wrong, and never reaches the parser


def is_correct(prediction: str | None, gold: str) -> bool:
    if not prediction or len(prediction) > MAX_ANSWER_CHARS:
        return False
    from math_verify import parse, verify

    # math-verify's timeouts use SIGALRM, which only the main thread may set
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(gold, parsing_timeout=timeout)
        pred_parsed = parse(prediction, parsing_timeout=timeout)
        # gold first: verify is not symmetric
        return bool(pred_parsed) and bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # a reply math-verify cannot read is a wrong reply, not a crash
        return False


def format_score(text: str) -> float:
    once = [text.count(t) == 1 for t in TAGS]
    if all(once) and FORMAT_RE.match(text):
        return 1.0
    return 0.2 * sum(once) + 0.2 * bool(NUMBER_RE.search(text))


def format_reward(completions, **kwargs) -> list[float]:
    return [format_score(completion_text(c)) for c in completions]


def correctness_score(text: str, gold: str) -> float:
    ex = extract_answer(text)
    if is_correct(ex.answer, gold):
        return 1.0 if ex.tagged else 0.5
    if any(is_correct(n, gold) for n in set(NUMBER_RE.findall(text)) - {ex.answer}):
        return 0.25
    return 0.0


def correctness_reward(completions, answer, **kwargs) -> list[float]:
    return [correctness_score(completion_text(c), str(g)) for c, g in zip(completions, answer)]


REWARDS = {"format": format_reward, "correctness": correctness_reward}
