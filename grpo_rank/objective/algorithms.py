"""The training objectives, keyed by `algorithm=<name>`: a sweep axis like strategy and seed.

    python -m grpo_rank.run -m algorithm=grpo,dr_grpo,dapo,bnpo,rloo,sft seed=0,1,2

Every algorithm trains the same model with the same LoRA plan, the same profiler, clip and records
(train.py builds its TRL trainer and hands it the same callbacks); only the objective differs:
- the GRPO family is TRL's GRPOTrainer with one `loss_type` (how the token losses of a batch are
  aggregated) and one reward scaling (`scale_rewards`: by the group's std, or none);
- `rloo` is TRL's RLOOTrainer: each completion's baseline is the mean reward of the other completions
  of its prompt;
- `sft` is TRL's SFTTrainer on the task's gold solutions in the answer format (tasks.gold_completion),
  loss on the completion tokens only: the head-to-head the study only cited. Its batch is
  `grpo.per_device_batch_size` solutions, as a GRPO batch is that many completions.

The study does not say which GRPO loss aggregation it used; `dapo` is TRL 1.16's GRPOTrainer default
and what every run of this tool used before the option existed, so it stays the default.
Imports no torch: config.py validates `algorithm.name` against ALGORITHMS.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Algorithm:
    trainer: str  # which TRL trainer: grpo | rloo | sft (train.TRAINERS)
    about: str
    loss_type: str | None = None  # GRPOConfig.loss_type, for the GRPO family
    scale_rewards: str | None = None  # GRPOConfig.scale_rewards, for the GRPO family

    @property
    def rewarded(self) -> bool:
        """Whether it learns from the reward functions (sft learns from gold solutions instead)."""
        return self.trainer != "sft"


ALGORITHMS: dict[str, Algorithm] = {
    "grpo": Algorithm("grpo", "GRPO (DeepSeekMath): each sequence's token losses averaged, then the sequences; "
                      "advantages scaled by the group's reward std", loss_type="grpo", scale_rewards="group"),
    "dapo": Algorithm("grpo", "DAPO's token-level aggregation (TRL 1.16's GRPO default): token losses summed over "
                      "the batch and divided by its active tokens", loss_type="dapo", scale_rewards="group"),
    "dr_grpo": Algorithm("grpo", "Dr. GRPO: token losses divided by a constant (max_completion_length), rewards "
                         "not scaled by the group's std", loss_type="dr_grpo", scale_rewards="none"),
    "bnpo": Algorithm("grpo", "BNPO: token losses divided by the active tokens of the local batch",
                      loss_type="bnpo", scale_rewards="group"),
    "rloo": Algorithm("rloo", "REINFORCE leave-one-out (TRL RLOOTrainer): the baseline of a completion is the "
                      "mean reward of the other completions of its prompt"),
    "sft": Algorithm("sft", "supervised fine-tuning (TRL SFTTrainer) on the task's gold solutions, loss on "
                     "the completion tokens"),
}
