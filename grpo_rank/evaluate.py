"""Greedy, batched evaluation on the held-out split: accuracy with its 95% Wilson interval, the
parse-failure rate apart from wrong answers, and every question's outcome (for paired tests later).

Scoring is the correctness reward's: the number inside <answer>, else the last number of the reply,
compared with math-verify. `tagged` in each outcome says which of the two was used.
"""

from __future__ import annotations

from dataclasses import dataclass

from .rewards import extract_answer, is_correct
from .tasks import Example, messages


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    return float(lo), float(hi)


@dataclass
class EvalResult:
    n: int
    correct: int
    parse_failures: int
    ci_low: float
    ci_high: float
    outcomes: list[dict]

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def summary(self, split: str) -> dict:
        return {"split": split, "n": self.n, "correct": self.correct, "accuracy": self.accuracy,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "parse_failures": self.parse_failures,
                "parse_failure_rate": self.parse_failures / self.n if self.n else 0.0}


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    import torch

    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                             top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id, use_cache=True)
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def evaluate(model, tokenizer, examples: list[Example], system_prompt: str, *, batch_size: int,
             max_new_tokens: int, progress: bool = True) -> EvalResult:
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    outcomes, correct, failures = [], 0, 0
    bar = tqdm(total=len(examples), desc="eval", unit="q", disable=not progress)
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        prompts = [tokenizer.apply_chat_template(messages(e.question, system_prompt), tokenize=False,
                                                 add_generation_prompt=True) for e in batch]
        for i, (e, reply) in enumerate(zip(batch, generate(model, tokenizer, prompts, max_new_tokens))):
            ex = extract_answer(reply)
            ok = is_correct(ex.answer, e.answer)
            correct += ok
            failures += ex.answer is None
            outcomes.append({"index": start + i, "id": e.id, "gold": e.answer, "prediction": ex.answer,
                             "tagged": ex.tagged, "parsed": ex.answer is not None, "correct": bool(ok),
                             "reply": reply})
        bar.update(len(batch))
    bar.close()
    if was_training:
        model.train()
    lo, hi = wilson_interval(correct, len(examples)) if examples else (0.0, 0.0)
    return EvalResult(len(examples), correct, failures, lo, hi, outcomes)
