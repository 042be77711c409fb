"""The evaluate stage: greedy, batched generation on the held-out split; accuracy with its 95% Wilson
interval, the parse-failure rate apart from wrong answers, and every question's outcome (for paired
tests later).

Decoding is explicit: every generation setting is passed (greedy, one beam, repetition penalty 1.0),
so a model's own generation_config (Qwen2.5-Instruct ships a repetition penalty and sampling
settings) changes nothing, and the settings used are recorded with the result. Only the stop tokens
are the model's. Scoring is `eval.scoring`'s (answers.SCORING): the correctness reward's checker
(`rewards.judge`) for `any` and `tagged`, the math-verify library for `math_verify` (symbolic.py, in a
worker process of its own for the length of the evaluation); the summary records which.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from grpo_rank.analysis.stats import wilson_interval
from grpo_rank.data.tasks import Example, messages
from grpo_rank.objective.answers import counts
from grpo_rank.objective.rewards import judge
from grpo_rank.objective.symbolic import MathVerify
from grpo_rank.record.result import EvalSummary


@dataclass
class EvalResult:
    n: int
    correct: int
    parse_failures: int
    outcomes: list[dict]
    generation: dict

    def summary(self, split: str) -> EvalSummary:
        lo, hi = wilson_interval(self.correct, self.n) if self.n else (0.0, 0.0)
        return EvalSummary(split=split, n=self.n, correct=self.correct, accuracy=self.correct / self.n if self.n else 0.0,
                           ci_low=lo, ci_high=hi, parse_failures=self.parse_failures,
                           parse_failure_rate=self.parse_failures / self.n if self.n else 0.0,
                           generation=self.generation, scoring=self.generation.get("scoring"))


def generation_settings(model, tokenizer, max_new_tokens: int) -> dict:
    """Greedy decoding with nothing left to the model's defaults but its stop tokens."""
    eos = model.generation_config.eos_token_id
    return {"do_sample": False, "num_beams": 1, "temperature": None, "top_p": None, "top_k": None,
            "repetition_penalty": 1.0, "max_new_tokens": int(max_new_tokens), "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": eos if eos is not None else tokenizer.eos_token_id, "use_cache": True}


def generate(model, tokenizer, prompts: list[str], settings: dict) -> list[str]:
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, generation_config=GenerationConfig(**settings))
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def evaluate(model, tokenizer, examples: list[Example], system_prompt: str, *, batch_size: int,
             max_new_tokens: int, few_shot: bool = True, scoring: str = "any", progress: bool = True) -> EvalResult:
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    settings = generation_settings(model, tokenizer, max_new_tokens)
    outcomes, correct, failures = [], 0, 0
    bar = tqdm(total=len(examples), desc="eval", unit="q", disable=not progress)
    with MathVerify() if scoring == "math_verify" else nullcontext() as verifier:
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            prompts = [tokenizer.apply_chat_template(messages(e.question, system_prompt, few_shot), tokenize=False,
                                                     add_generation_prompt=True) for e in batch]
            for i, (e, reply) in enumerate(zip(batch, generate(model, tokenizer, prompts, settings))):
                j = verifier.judge(reply, e.answer) if verifier else judge(reply, e.answer)
                ok = counts(j, scoring)
                correct += ok
                failures += j.answer is None
                outcomes.append({"index": start + i, "id": e.id, "gold": e.answer, "prediction": j.answer,
                                 "tagged": j.tagged, "parsed": j.answer is not None, "correct": ok,
                                 "value_correct": bool(j.correct), "reply": reply})
            bar.update(len(batch))
        timeouts = verifier.timed_out if verifier else 0
    bar.close()
    if was_training:
        model.train()
    extra = {"math_verify_timeouts": timeouts} if scoring == "math_verify" else {}
    return EvalResult(len(examples), correct, failures, outcomes,
                      {**settings, "few_shot": few_shot, "scoring": scoring, **extra})
