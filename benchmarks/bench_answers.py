"""Worst-case time of the answer checker and every reward on hostile model output.

    python -m benchmarks.bench_answers            # prints the corpus size and the slowest calls
    python -m benchmarks.bench_answers --repeat 5

Each corpus entry is judged (`answers.judge`, what evaluation calls) and scored by every reward in
`rewards.REWARDS`, in the main thread and in a worker thread (TRL and data loaders may call rewards
off the main thread, where SIGALRM timeouts do not work; ours need none). The target is a slowest
call under 0.1 s; the exit status is 1 when a call exceeds it.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Callable

from grpo_rank.objective.answers import judge
from grpo_rank.objective.rewards import REWARDS

TARGET_S = 0.1


def hostile_corpus() -> list[tuple[str, str, str]]:
    """(name, reply, gold) triples: inputs built to make a checker slow, crash or over-credit."""
    big = "9" * 1_000_000
    return [
        ("power tower tagged", "<answer>9^{9^{9^{9}}}</answer>", "42"),
        ("power tower untagged", "so the answer is 9^{9^{9^{9^{9}}}}", "42"),
        ("power tower boxed", "\\boxed{9^{9^{9^{9}}}}", "42"),
        ("python power", "<answer>9**9**9**9</answer>", "42"),
        ("1e6-digit number tagged", f"<answer>{big}</answer>", "42"),
        ("1e6-digit number untagged", f"the answer is {big}", "42"),
        ("1e6-digit fraction", f"<answer>\\frac{{{big}}}{{{big}}}</answer>", "1"),
        ("1e6-digit with commas", "<answer>" + "999," * 250_000 + "999</answer>", "42"),
        ("1e6-digit number among words", f"<think>{big} {big}</think> 42 then {big}", "42"),
        ("200k chars, 10k unclosed <answer>", ("<answer>" + "x" * 12) * 10_000, "42"),
        ("200k chars, 10k unclosed <answer> with numbers", ("<answer>42 " + "y" * 9) * 10_000, "42"),
        ("10k unclosed then one closed", ("<answer>" * 10_000) + "42</answer>" + "</answer>", "42"),
        ("10k closed answers", "<answer>41</answer>" * 10_000, "42"),
        ("10k tags of every kind", "<think></think><answer></answer>" * 10_000, "42"),
        ("unordered tags", "</answer> 5 <answer><think></think>" * 5_000, "5"),
        ("deeply nested braces", "\\boxed{" * 50_000 + "42" + "}" * 50_000, "42"),
        ("nested braces in tags", "<answer>" + "{" * 100_000 + "42" + "}" * 100_000 + "</answer>", "42"),
        ("unclosed boxed", "\\boxed{" * 50_000 + "42", "42"),
        ("nested frac", "<answer>" + "\\frac{" * 20_000 + "1" + "}{2}" * 20_000 + "</answer>", "42"),
        ("long operator run", "1+" * 100_000 + "42", "42"),
        ("long sign run", "-$" * 100_000 + "42", "42"),
        ("number list 0..50k", " ".join(map(str, range(50_000))), "42"),
        ("comma list in tags", "<answer>" + ", ".join(map(str, range(30_000))) + "</answer>", "42"),
        ("100k spaces then a number", " " * 100_000 + "42", "42"),
        ("100k equals signs", "<answer>" + "=" * 100_000 + "42</answer>", "42"),
        ("100k text groups", "<answer>" + "\\text{a}" * 20_000 + "42</answer>", "42"),
        ("100k backslashes", "\\" * 100_000 + "42", "42"),
        ("100k dollars", "$" * 100_000 + "42" + "$" * 100_000, "42"),
        ("100k percents", "<answer>42" + "%" * 100_000 + "</answer>", "42"),
        ("unit-word bait", "<answer>42" + " apples" * 30_000 + "</answer>", "42"),
        ("code", "<answer>__import__('os').system('echo pwned')</answer>", "0"),
        ("eval bait", "<answer>eval('6*7')</answer>", "42"),
        ("unicode digits", "<answer>" + "\u0664\u0662" * 50_000 + "</answer>", "42"),
        ("control characters", "\x00\x1b[2J" * 20_000 + "42", "42"),
        ("lone surrogates", "\ud800" * 50_000 + "<answer>42</answer>", "42"),
    ]


def _calls(reply: str, gold: str) -> dict[str, Callable[[], object]]:
    calls: dict[str, Callable[[], object]] = {"judge": lambda: judge(reply, gold)}
    for name, fn in REWARDS.items():
        calls[name] = lambda fn=fn: fn([reply], answer=[gold])
    return calls


def time_corpus(repeat: int = 1) -> list[tuple[float, str, str, str]]:
    """(seconds, entry, call, thread) for every call, slowest of `repeat` runs, in both threads."""
    times: list[tuple[float, str, str, str]] = []

    def run(where: str) -> None:
        for name, reply, gold in hostile_corpus():
            for call, fn in _calls(reply, gold).items():
                best = 0.0
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    fn()
                    best = max(best, time.perf_counter() - t0)
                times.append((best, name, call, where))

    run("main")
    worker = threading.Thread(target=run, args=("worker",))
    worker.start()
    worker.join()
    return sorted(times, reverse=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="time each call this many times, keep the slowest")
    p.add_argument("--top", type=int, default=5, help="how many of the slowest calls to list")
    args = p.parse_args(argv)
    corpus = hostile_corpus()
    times = time_corpus(args.repeat)
    chars = sum(len(reply) for _, reply, _ in corpus)
    print(f"hostile corpus: {len(corpus)} replies, {chars:,} chars; {len(times)} timed calls "
          f"(judge + {len(REWARDS)} rewards, main and worker thread, slowest of {args.repeat})")
    for s, name, call, where in times[:args.top]:
        print(f"  {s * 1000:8.2f} ms  {call:20s} {where:6s}  {name}")
    slowest = times[0][0]
    verdict = "OK" if slowest < TARGET_S else "TOO SLOW"
    print(f"slowest call: {slowest * 1000:.2f} ms (target < {TARGET_S * 1000:.0f} ms): {verdict}")
    return 0 if slowest < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
