"""A task's question-and-answer example, shared by the built-in tasks (tasks.py) and any dataset (hf_task.py)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

CALCULATOR_RE = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations, e.g. <<48/2=24>>


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    answer: str
    solution: str = ""  # the gold reasoning, without the final answer


def gold_completion(example: Example) -> str:
    """The study's answer format around the gold reasoning: what a perfect completion looks like."""
    return f"<think>{example.solution}</think><answer>{example.answer}</answer>"


def _qid(question: str) -> str:
    return hashlib.sha1(question.encode()).hexdigest()[:12]
