"""The evaluate stage: greedy, batched generation on the held-out split; accuracy with its 95% Wilson
interval, the parse-failure rate apart from wrong answers, and every question's outcome (for paired
tests later). Whatever eval.scoring counts, the summary also holds the accuracy under both scorings
(`tagged`: only the answer inside <answer></answer>; `any`: also an untagged one) and the fraction of
replies in the format reward's shape (`rewards.well_formed`), so that a gain in tagged accuracy can be
told apart from learning the format.

Decoding is explicit: every generation setting is passed (greedy, one beam, repetition penalty 1.0),
so a model's own generation_config (Qwen2.5-Instruct ships a repetition penalty and sampling
settings) changes nothing, and the settings used are recorded with the result. Only the stop tokens
are the model's. Scoring is `eval.scoring`'s (answers.SCORING): the correctness reward's checker
(`rewards.judge`) for `any` and `tagged`, the math-verify library for `math_verify` (symbolic.py, in a
worker process of its own for the length of the evaluation); the summary records which.

Speed, with the same replies: the LoRA adapter is merged into the base weights for the evaluation
(`merged`: W + s B A computed once, instead of two more products per projection and token; the
original weights are put back bit for bit after), and the prompts are generated in batches of similar
length (sorted by token count, longest first), so a batch pads little; outcomes are written in question
order. `eval.backend=vllm` generates with vLLM instead (vllm_eval.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from grpo_rank.data.tasks import Example, messages
from grpo_rank.evaluation.interval import wilson_interval
from grpo_rank.objective.answers import counts
from grpo_rank.objective.rewards import judge, well_formed
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

        def fraction(key: str) -> float:
            return sum(bool(o[key]) for o in self.outcomes) / self.n if self.n else 0.0

        return EvalSummary(split=split, n=self.n, correct=self.correct, accuracy=self.correct / self.n if self.n else 0.0,
                           ci_low=lo, ci_high=hi, parse_failures=self.parse_failures,
                           parse_failure_rate=self.parse_failures / self.n if self.n else 0.0,
                           generation=self.generation, accuracy_tagged=fraction("tagged_correct"),
                           accuracy_any=fraction("value_correct"), well_formed_fraction=fraction("well_formed"),
                           scoring=self.generation.get("scoring"))


def outcome(index: int, example: Example, reply: str, scoring: str, verifier: MathVerify | None = None) -> dict:
    """One question's row of eval_outcomes.jsonl: `correct` under `scoring` (math-verify's judgement with
    eval.scoring=math_verify, else the strict checker's), and beside it the strict checker's answer under
    both of its scorings (`tagged_correct`, `value_correct`: any) and whether the reply has the format
    reward's shape (`well_formed`)."""
    strict = judge(reply, example.answer)
    j = verifier.judge(reply, example.answer) if verifier else strict
    return {"index": index, "id": example.id, "gold": example.answer, "prediction": j.answer, "tagged": j.tagged,
            "parsed": j.answer is not None, "correct": counts(j, scoring), "value_correct": bool(strict.correct),
            "tagged_correct": counts(strict, "tagged"), "well_formed": well_formed(reply), "reply": reply}


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


def _lora_layers(model) -> list:
    return [m for m in model.modules() if hasattr(m, "get_delta_weight") and hasattr(m, "base_layer")
            and getattr(m, "active_adapters", None)]


@contextmanager
def merged(model) -> Iterator[None]:
    """The model with its active LoRA adapters merged into the base weights, for generation only; on exit
    every base weight is the original tensor again (bit for bit: kept, not recomputed by unmerging). A
    model without LoRA layers is left as it is. Needs one more copy of the targeted weights meanwhile."""
    layers = _lora_layers(model) if hasattr(model, "disable_adapter") else []  # a PeftModel's
    if not layers:
        yield
        return
    originals = []
    try:
        with torch.no_grad():
            for layer in layers:
                weight = layer.get_base_layer().weight
                delta = sum(layer.get_delta_weight(name) for name in layer.active_adapters)
                originals.append((weight, weight.data))
                weight.data = weight.data + delta.to(weight.dtype)
        with model.disable_adapter():  # the adapters' own products would now count twice
            yield
    finally:
        for weight, data in originals:
            weight.data = data


def prompt_order(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Batches of question indices, longest prompts first, so that each batch pads to a similar length."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


# questions per second, also when it is below one (tqdm would otherwise flip to seconds per question)
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}]"


def evaluate(model, tokenizer, examples: list[Example], system_prompt: str, *, batch_size: int,
             max_new_tokens: int, few_shot: bool = True, scoring: str = "any", progress: bool = True,
             merge: bool = True) -> EvalResult:
    """Greedy replies to `examples`, scored; `merge=False` generates through the unmerged adapter."""
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    settings = generation_settings(model, tokenizer, max_new_tokens)
    prompts = [tokenizer.apply_chat_template(messages(e.question, system_prompt, few_shot), tokenize=False,
                                             add_generation_prompt=True) for e in examples]
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]] if prompts else []
    replies: list[str | None] = [None] * len(examples)
    bar = tqdm(total=len(examples), desc="eval", unit="q", disable=not progress, bar_format=BAR_FORMAT)
    with merged(model) if merge else nullcontext():
        for batch in prompt_order(lengths, batch_size):
            for i, reply in zip(batch, generate(model, tokenizer, [prompts[i] for i in batch], settings)):
                replies[i] = reply
            bar.update(len(batch))
    bar.close()
    if was_training:
        model.train()
    return score(examples, replies, scoring, {**settings, "few_shot": few_shot, "scoring": scoring})


def score(examples: list[Example], replies: list[str], scoring: str, generation: dict) -> EvalResult:
    """Every reply judged against its question's gold answer, in question order (`outcome`); with
    eval.scoring=math_verify in a math-verify worker process (symbolic.py), whose timeouts are recorded."""
    with MathVerify() if scoring == "math_verify" else nullcontext() as verifier:
        outcomes = [outcome(i, e, reply, scoring, verifier) for i, (e, reply) in enumerate(zip(examples, replies))]
        if verifier is not None:
            generation = {**generation, "math_verify_timeouts": verifier.timed_out}
    return EvalResult(len(examples), sum(o["correct"] for o in outcomes), sum(not o["parsed"] for o in outcomes),
                      outcomes, generation)
