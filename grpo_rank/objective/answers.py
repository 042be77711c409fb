"""The strict answer checker that rewards and evaluation share: `judge(reply, gold)`.

A reply is correct only if its answer is ONE numeric value equal to the gold, compared exactly as
rationals (`fractions.Fraction`). Model text is parsed by a small grammar, never evaluated, in time
linear in the reply (every regex below either runs on a capped string or cannot backtrack), with no
timeout needed, so it is safe in any thread.

Which text is the answer (`Judgement.answer`; None, a parse failure, only when the reply gives
none: an empty tag, or no tag and no digit; an answer that is not one number is wrong, not a failure):
- tagged: inside the last `<answer>` that is closed, up to its first `</answer>`.
- untagged (evaluation counts it, as before; only `correctness_partial` rewards it, at 0.5): the
  content of the last `\\boxed{...}`, else the last "math run": the stretch of digits, signs,
  operators, brackets, `$`, `%` and LaTeX commands around the reply's last digit, bounded by words,
  `=` or other prose. `So she makes 18 dollars.` -> `18`; `9 + 9 = 18, so it is 20` -> `20`;
  `so 2 \\times 42` -> `2 \\times 42` (wrong); `41, 42, 43` -> the whole list (wrong). A run right
  after an inequality (`x >= 42`, `x != 42`) or with a letter glued to it (`x42`) is no value.
  This is not a hole: one value is judged, and it must stand alone, so listing candidates or
  embedding the gold in an expression earns nothing; a reply cut off before `</answer>` still
  answered.

What counts as one value (`parse_answer`), after these are peeled, in this order:
- math wrappers around the whole answer: `$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]`, `\\boxed{...}`,
  `{...}`, `(...)`; a trailing `.` `,` `;` `:`;
- an equation's left side: `x = 42` and `6 \\times 7 = 42` are judged on what follows the last `=`
  (a stated result is one value; `42 = 6 \\times 7` is judged on `6 \\times 7`: wrong), but `!=`,
  `>=`, `<=` make the answer wrong;
- units: a trailing `%` or `\\%` (so `50%` has the value 50: GSM8K golds count percent in the
  question's unit), and up to three trailing words of letters, plain or in `\\text{...}`-style groups
  (`18 dollars`, `5 square feet`, `5\\text{ km}`), unless one is a connective or operator word
  (`or`, `not`, `plus`, `squared`, ... in STOP_WORDS). Leading words are not peeled (`about 42`,
  `the answer is 42` are wrong inside the tags: the prompt asks for the number only).
The rest must be exactly one of: an optional sign and/or currency `$`/`\\$`, then a decimal
(`42`, `42.0`, `.5`, `-3`, `+7`, `042`), a decimal with strict thousands groups (`42,000`,
`1,234.5`; `4,2` is a list), `\\frac{a}{b}` / `\\dfrac` / `\\tfrac` or `a/b` of unsigned integers
(`\\frac{84}{2}` and `84/2` are the one value 42; `0.5` equals `1/2`). Anything else is not one
value: operators (`2 \\times 42`, `42 + 0`, `42^{2}`, `42!` is a factorial), functions (`\\gcd(12, 42)`,
`\\sqrt{42}`), lists (`40 42`, `41, 42, 43`), scientific notation, words glued to digits (`42x`).

Bounds: an answer longer than MAX_ANSWER_CHARS is wrong without being parsed (a final answer is
short), so numbers never exceed ~100 digits and no power is ever computed; finding the answer takes
a few `str.find` scans of the reply and regexes on windows of at most 2 x MAX_ANSWER_CHARS.
`python -m benchmarks.bench_answers` times the worst cases (target: < 0.1 s per call).

Golds are ours (GSM8K's number after '####', the arithmetic task's ints): `parse_gold` raises
ValueError for one that is not a number, rather than scoring every reply wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

MAX_ANSWER_CHARS = 100
OPEN, CLOSE = "<answer>", "</answer>"
DIGITS = "0123456789"
RELATIONS = frozenset("<>≠≤≥≈~")
STOP_WORDS = frozenset(
    "or and not no nor to plus minus times over divided by less more than about approximately around "
    "nearly almost roughly at least most under above below squared cubed power root mod x".split())

_NUM = r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?|\.[0-9]+"
_VALUE_RE = re.compile(
    r"(?P<s1>[+-]?)\s*(?:\\?\$\s*(?P<s2>[+-]?)\s*)?"
    rf"(?:(?P<num>{_NUM})"
    r"|\\[dt]?frac\s*\{\s*(?P<fn>[0-9]+)\s*\}\s*\{\s*(?P<fd>[0-9]+)\s*\}"
    r"|(?P<n>[0-9]+)\s*/\s*(?P<d>[0-9]+))"
    r"\s*(?:\\?%)?", re.ASCII)
# LaTeX text groups are unwrapped: their words then go through the unit-word rule like plain ones.
_TEXT_RE = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
# A math run: digits, signs, operators, brackets, currency, percent, LaTeX commands and spaces. Runs
# end at letters (words), `=`, `<`, `>` and other prose punctuation. Nothing follows the repetition,
# so every prefix is a match and the engine never backtracks: linear in the window.
_RUN_RE = re.compile(
    r"(?:\\(?:text|textbf|textrm|textit|mathrm|mathbf|mbox)\s*\{[^{}0-9]*\}"
    r"|\\[A-Za-z]+|\\[^A-Za-z]|[0-9.,+\-*/^_()\[\]{}$%!|\s\u2212\u00d7\u00f7\u00b7])+")
_UNIT_WORDS_RE = re.compile(r"(?:\s+[A-Za-z]+){1,3}\s*$")
_TAG_END_RE = re.compile(r"</?[A-Za-z_]{1,10}>\Z")
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("\\boxed{", "}"),
             ("\\fbox{", "}"), ("{", "}"), ("(", ")"))


@dataclass(frozen=True)
class Judgement:
    answer: str | None  # the answer text judged; None: the reply gives no answer (a parse failure)
    tagged: bool  # the answer came from inside <answer>...</answer>
    correct: bool  # the answer is one numeric value equal to the gold
    value: Fraction | None = None  # that one value, None when the answer is not a single number
    span: tuple[int, int] = (0, 0)  # where the answer lies in the reply (rewards look outside it)


def _relation_before(text: str, i: int) -> bool:
    """Whether text[:i] ends in an inequality (`<`, `>=`, `!=`, `≠`, ...), so what follows is a bound."""
    c = text[i - 1:i]
    if c == ">" and _TAG_END_RE.search(text[max(0, i - 13):i]):  # `<answer>42`: a tag, not "greater"
        return False
    return c in RELATIONS or (c == "=" and text[i - 2:i - 1] in ("<", ">", "!"))


def _strip_punct(s: str) -> str:
    return s.strip().rstrip(".,;:").strip()


def _unwrap(s: str) -> str:
    """Peel wrappers that enclose the whole string; each pass shortens it, so at most len/2 passes."""
    s = _strip_punct(s)
    changed = True
    while changed:
        changed = False
        for left, right in _WRAPPERS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s, changed = _strip_punct(s[len(left):-len(right)]), True
                break
    return s


def _value(s: str) -> Fraction | None:
    s = s.replace("\u2212", "-").replace("{,}", ",").replace("\\,", ",")
    for space in ("\\!", "\\;", "\\:", "\\ "):
        s = s.replace(space, "")
    m = _VALUE_RE.fullmatch(_unwrap(s))
    if not m or (m["s1"] and m["s2"]):
        return None
    if m["num"] is not None:
        v = Fraction(m["num"].replace(",", ""))
    else:
        num, den = (int(m["fn"]), int(m["fd"])) if m["fn"] is not None else (int(m["n"]), int(m["d"]))
        if den == 0:
            return None
        v = Fraction(num, den)
    return -v if "-" in (m["s1"] or m["s2"] or "") else v


def parse_answer(text: str, *, unit_words: bool = True) -> Fraction | None:
    """The one numeric value `text` states, or None (see the module docstring for the grammar)."""
    if len(text) > MAX_ANSWER_CHARS:
        return None
    s = _unwrap(_TEXT_RE.sub(lambda m: f" {m[1]} ", text))  # `42\text{ dollars}` reads as `42 dollars`
    eq = s.rfind("=")
    if eq >= 0:
        if _relation_before(s, eq + 1):  # `x != 42`, `x >= 42`: not a statement of the value
            return None
        s = _unwrap(s[eq + 1:])
    if unit_words:
        m = _UNIT_WORDS_RE.search(s)
        if m:
            if any(w.lower() in STOP_WORDS for w in m[0].split()):
                return None
            s = s[:m.start()]
    return _value(s)


@lru_cache(maxsize=4096)
def parse_gold(gold: str) -> Fraction:
    """A gold answer as a rational; golds are ours (GSM8K's '#### 1,234' number, the arithmetic
    task's ints), so one that is not a number is a data error, raised, never scored as all-wrong."""
    v = parse_answer(str(gold).strip(), unit_words=False)
    if v is None:
        raise ValueError(f"gold answer {gold!r} is not a single number")
    return v


def tagged_span(text: str) -> tuple[int, int] | None:
    """Inside the last <answer> that is closed, up to its first </answer>: three linear scans, so
    thousands of unclosed tags cost nothing (a non-greedy regex here is quadratic)."""
    last_close = text.rfind(CLOSE)
    if last_close < 0:
        return None
    start = text.rfind(OPEN, 0, last_close)
    if start < 0:
        return None
    return start + len(OPEN), text.find(CLOSE, start + len(OPEN))


def _boxed_span(text: str) -> tuple[int, int] | None:
    """The content of the last `\\boxed{`, if its brace closes within MAX_ANSWER_CHARS."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    start += len("\\boxed{")
    depth = 1
    for i in range(start, min(len(text), start + MAX_ANSWER_CHARS + 1)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return start, i
    return None


def _last_run(text: str) -> tuple[int, int, bool] | None:
    """The math run around the last digit, looked for in a window of MAX_ANSWER_CHARS either side,
    and whether it may be a value (False after an inequality or with a letter glued to it)."""
    last = max(text.rfind(d) for d in DIGITS)
    if last < 0:
        return None
    lo = max(0, last - MAX_ANSWER_CHARS)
    window = text[lo:last + MAX_ANSWER_CHARS]
    for m in _RUN_RE.finditer(window):
        if m.start() <= last - lo < m.end():
            start, end = m.span()
            if _relation_before(window, start):  # `x >= 42`, `x != 42`: a bound, not the value
                return lo + start, lo + end, False
            start += len(m[0]) - len(m[0].lstrip())  # leading spaces are not part of the answer
            end -= len(m[0]) - len(m[0].rstrip())
            # a run reaching the window's start spans > MAX_ANSWER_CHARS: parse_answer rejects it
            return lo + start, lo + end, not _glued(window, start, end)
    raise AssertionError("a digit always lies in a math run")


def _glued(text: str, start: int, end: int) -> bool:
    """A letter right against the run (`42x`, `x42`): a term of an expression, not a value."""
    return (start > 0 and text[start - 1].isalpha()) or (end < len(text) and text[end].isalpha())


def _shown(answer: str) -> str:
    return answer if len(answer) <= MAX_ANSWER_CHARS else answer[:MAX_ANSWER_CHARS] + "..."


def judge(reply: str, gold: str) -> Judgement:
    """Judge one reply against its gold answer; raises ValueError only for a gold that is not a number."""
    target = parse_gold(gold)
    span = tagged_span(reply)
    if span is not None:
        answer = reply[span[0]:span[1]].strip()
        if not answer:
            return Judgement(None, True, False, None, span)
        value = parse_answer(answer)
        return Judgement(_shown(answer), True, value == target, value, span)
    span = _boxed_span(reply)
    if span is not None:
        answer = reply[span[0]:span[1]].strip()
        value = parse_answer(answer) if answer else None
        return Judgement(_shown(answer) or None, False, value == target, value, span)
    span = _last_run(reply)
    if span is None:
        return Judgement(None, False, False)
    start, end, may_be_value = span
    answer = reply[start:end].strip()
    value = parse_answer(answer) if may_be_value else None
    return Judgement(_shown(answer), False, value == target, value, (start, end))


# eval.scoring -> what counts as a correct answer in evaluation
SCORING = {"any": "the tagged answer, else the last \\boxed{}, else the last number",
           "tagged": "only the answer inside <answer></answer> (the study's correctness reward)",
           "math_verify": "the tagged answer, else the reply's final answer, by the math-verify library (symbolic.py)"}
NUMBER_SCORING = ("any", "tagged")  # the scorers of `judge`, whose gold answers must be single numbers


def counts(j, scoring: str) -> bool:
    """Whether judgement `j` is a correct answer under `scoring` (math_verify: symbolic.MathVerify's judgement)."""
    return bool(j.correct and (j.tagged or scoring != "tagged"))
