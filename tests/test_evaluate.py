"""Evaluation made faster without changing a reply (evaluation/evaluate.py): the adapter merged for the
generation and put back bit for bit, prompts batched by length and the outcomes in question order, the rate
in questions per second; and the adapter as vLLM receives it (vllm_eval.export_adapter), read back by PEFT.
Real PEFT on the tiny model with an adapter far from zero, so that the replies differ between questions.

    OMP_NUM_THREADS=1 python -m pytest tests/test_evaluate.py -q
"""

from __future__ import annotations

import pytest
import torch

from grpo_rank.config.schema import TaskConfig
from grpo_rank.data import models
from grpo_rank.data.tasks import load_split, messages
from grpo_rank.evaluation.evaluate import evaluate, generate, generation_settings, merged, prompt_order
from grpo_rank.evaluation.vllm_eval import export_adapter
from tests.test_full_weight import CFG, PLAN, peft_model

SYSTEM = "Reply with <answer>the number</answer>."


@pytest.fixture(scope="module")
def trained():
    """The tiny model under the 4..64 plan (rsLoRA scaling), its B matrices drawn as if trained."""
    model = peft_model(PLAN, "rslora")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    _, tok = models.load(CFG, "/nonexistent", seed=0)
    return model, tok, load_split(TaskConfig(name="arithmetic"), "test")[:13]


def file_order_replies(model, tok, examples, batch_size: int, max_new_tokens: int) -> list[str]:
    """How evaluation generated before: through the unmerged adapter, batches in file order."""
    model.eval()
    tok.padding_side = "left"
    settings = generation_settings(model, tok, max_new_tokens)
    prompts = [tok.apply_chat_template(messages(e.question, SYSTEM), tokenize=False, add_generation_prompt=True)
               for e in examples]
    return [r for i in range(0, len(prompts), batch_size)
            for r in generate(model, tok, prompts[i:i + batch_size], settings)]


def test_merged_sorted_evaluation_gives_the_replies_of_before_and_restores_the_model(trained):
    model, tok, examples = trained
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    before = file_order_replies(model, tok, examples, batch_size=5, max_new_tokens=10)
    assert len(set(before)) > len(before) // 2  # replies that differ: a test that can see a change
    for merge in (True, False):
        ev = evaluate(model, tok, examples, SYSTEM, batch_size=5, max_new_tokens=10, merge=merge, progress=False)
        assert [o["reply"] for o in ev.outcomes] == before, f"merge={merge}"
        assert [(o["index"], o["id"]) for o in ev.outcomes] == [(i, e.id) for i, e in enumerate(examples)]
    for name, p in model.named_parameters():
        assert torch.equal(p, state[name]), name  # base weights put back bit for bit, adapters untouched
    layer = next(m for m in model.modules() if hasattr(m, "lora_A"))
    assert not layer.disable_adapters and not layer.merged  # the adapter is live again after evaluation


def test_merged_is_the_adapted_model(trained):
    """Inside `merged` the base weights carry the adapter (outputs match the unmerged model's), the adapter
    layers are bypassed, and outside it everything is as it was."""
    model, tok, _ = trained
    ids = torch.randint(3, 400, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        with merged(model):
            inside = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert not torch.allclose(adapted, base, atol=1e-3)
    torch.testing.assert_close(inside, adapted, rtol=1e-4, atol=1e-4)
    assert torch.equal(after, adapted)


def test_prompts_go_longest_first_and_every_question_once():
    lengths = [5, 9, 9, 2, 7, 1, 8]
    batches = prompt_order(lengths, 3)
    assert batches == [[1, 2, 6], [4, 0, 3], [5]]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))


def test_the_progress_bar_counts_questions_per_second(trained, capsys):
    model, tok, examples = trained
    evaluate(model, tok, examples[:2], SYSTEM, batch_size=2, max_new_tokens=2)
    assert "q/s" in capsys.readouterr().err


def test_the_adapter_for_vllm_is_the_same_adapter(trained, tmp_path):
    """Uniform rank, scaling 1, every module's B A * s unchanged: PEFT reads the export back to the same deltas."""
    from peft import PeftModel

    model, _, _ = trained
    assert export_adapter(model, tmp_path) == max(PLAN)
    base, _ = models.load(CFG, "/nonexistent", seed=0)
    loaded = PeftModel.from_pretrained(base, str(tmp_path))

    def deltas(m):
        return {n: layer.get_delta_weight("default") for n, layer in m.named_modules() if hasattr(layer, "lora_A")}

    ours, theirs = deltas(model), deltas(loaded)
    assert len(ours) == 12 * 7 and ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(theirs[name], ours[name], rtol=1e-5, atol=1e-6)
    assert {layer.r["default"] for layer in loaded.modules() if hasattr(layer, "lora_A")} == {max(PLAN)}
