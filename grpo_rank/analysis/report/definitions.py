"""The report's "Definitions" section: every number report.md prints, defined as gradstats.py, tables.py,
capacity.py, trajectories.py and grpo_rank/analysis/stats.py compute it. `{early}` and `{late}` are filled with
the run's window fractions. ADDED_DEFINITIONS follows DEFINITIONS in a report with the sections that
came after the golden one (markdown.render's capacity_rows); REWARD_DEFINITIONS in a report whose
per-reward section has numbers (rewards.py; markdown.render's reward_rows)."""

DEFINITIONS = """\
- **S(l)**, the importance of layer l: the sum over the layer's LoRA modules of each module's gradient
  norm sqrt(||grad A||^2 + ||grad B||^2) (before clipping), averaged over the training steps (the
  study's Eq. 2; `grpo_rank/allocation/importance.py`). Its **share** is S(l) / sum over layers of S.
- **max/min**: max_l S(l) / min_l S(l), over the per-layer means S(l).
- **top-30% share (k = ... of L)**: the layers sorted by S(l), descending; the share carried by the
  first k = round(0.3 L) of them, halves rounded up (L = 28 gives 8, L = 30 gives 9, L = 12 gives 4,
  L = 10 gives 3); k is printed beside the statistic.
- **Gini**: sum_i sum_j |S_i - S_j| / (2 L^2 mean S), 0 for equal shares, (L-1)/L at the extreme.
- **CV**: population standard deviation of S(l) over layers / its mean.
- **early-vs-late stability**: S(l) over the first ceil({early} T) steps vs over the last ceil({late} T)
  of the T recorded steps; Pearson r and Spearman rho across layers. 1: the ranking seen early holds.
- **LoRA scaling, and what it alone does to gradient norms**: PEFT multiplies a LoRA module's output by
  s(r): alpha / r with `lora.alpha_mode=fixed` (PEFT's; the study states none), alpha / sqrt(r) with `rslora`,
  alpha / lora.r on every layer with `per_rank`. At initialisation (B = 0) grad A = 0 and ||grad B||
  is proportional to s(r) sqrt(r), so a module's gradient norm goes as r^(-1/2) with fixed alpha (it
  *falls* as the rank grows), as r^0 with rslora and as r^(+1/2) with per_rank, whatever the layer's
  importance. These are the **predicted** scaling slopes: fixed -1/2, rslora 0, per_rank +1/2.
- **scaling-normalised norms**: each module norm n at rank r multiplied by s(r0) sqrt(r0) / (s(r) sqrt(r)),
  r0 = lora.r the uniform rank (`importance.scaling_normalised`): n sqrt(r / r0) with fixed alpha, n with
  rslora, n sqrt(r0 / r) with per_rank; a run at the uniform rank is unchanged. Applied to every
  module norm before the sum over modules, so S(l) normalised = S(l) * s(r0) sqrt(r0) / (s(r(l)) sqrt(r(l))).
  It removes the scaling predicted at init, not every later effect of the rank.
- **full-weight signal**: per module, ||dL/dW|| of the frozen projection W under the adapter, recorded
  in the same training steps (`profile.full_weight`); S(l) is the same sum over modules and average
  over steps. No LoRA rank or alpha enters W's gradient formula: its predicted scaling slope is 0.
- **scaling slope** of a run, against the uniform run of the same seed (same alpha mode): n(l, m) =
  module m's norm in layer l averaged over the training steps; d(l) = mean over the modules of
  log(n(l, m) / n_uniform(l, m)) (modules with a zero norm in either run left out); x(l) =
  log(r(l) / r_uniform(l)); the slope is the least-squares slope of d on x across the n layers (all L
  unless a layer has no non-zero module), with its 95% t-interval (n - 2 degrees of freedom; per seed).
  **At init**: the same on the norms of the first recorded training step with a gradient (a GRPO step
  with no reward spread in any group has none: it is skipped and named in the notes), where the prediction holds
  (in expectation). On the full-weight norms likewise. n/a when every layer has the same rank.
- **amplification** of a strategy: its max/min (and CV) of S(l) divided by uniform's, same seed
  (> 1: the re-allocated run's gradients are more uneven than the uniform run's). Computed on three
  views of S(l): raw LoRA norms (the study's), scaling-normalised, and the full-weight signal.
- **rank-shift correlation**: per layer, shift = share under the strategy - share under uniform (same
  seed, same alpha mode), correlated with the layer's allocated rank (Pearson, Spearman), on each of the
  three views. Pooled over the (seed, layer) pairs; its interval resamples seeds (all S^S resamples
  when S <= 4), given for >= 2 seeds and crude for 2-3. On raw norms the scaling alone pushes the shift
  *against* the rank with fixed alpha and *with* it with per_rank; the scaling-normalised and
  full-weight correlations are what the re-allocation does beyond the scaling.
- **headline**: for each gradient-aware arm (strategy proportional, whose ranks follow the map): the
  pooled rank-shift Pearson r and the mean max/min amplification on the three views. "Beyond scaling"
  reads the pooled Pearson intervals of the rank-invariant views (scaling-normalised, full-weight):
  every one above 0: a positive rank-shift correlation remains; every one containing 0: none is
  resolved; every one below 0: the shift runs against the ranks; otherwise the views disagree; n/a
  when no view has an interval (fewer than 2 seeds).
- **module shares**: each projection type's norm summed over layers, averaged over steps, divided by
  the total; attention = q,k,v,o; FFN = gate,up,down. **Same-shape statistics** repeat max/min,
  top-30% and Gini on one projection type at a time (the same weight shape in every layer), on
  scaling-normalised norms, so that neither projection sizes nor the scaling of a layer's rank can
  drive them (a uniform run's are its raw norms).
- **seed summaries**: a statistic is computed per seed, then averaged; the interval is a Student-t
  95% interval across seeds (n/a with one seed).
- **accuracy**: per run its 95% Wilson score interval [lo, hi] (asymmetric; from the job's result.json),
  and beside it the normal-approximation half-width +-1.96 sqrt(p (1 - p) / n) in accuracy points,
  which is what the study reports as its "Wilson" +- (p = 0.745, n = 200: +-6.04). Across seeds, the
  mean and a t-interval (n/a with one seed).
- **paired tests** (same questions, matched by question id): b = questions only the reference got
  right, c = questions only the strategy got right; exact McNemar p = min(1, 2 P(X <= min(b, c))),
  X ~ Binomial(b + c, 1/2) (statsmodels). The accuracy difference (strategy - reference) has a 95%
  percentile bootstrap interval resampling questions (10,000 resamples, seed 0). A strategy seed is
  paired with the reference's same seed; the base model, which is not trained, with its own seed if
  run, else with its one evaluation. The pooled row sums b and c over seed pairs (treating the pairs as
  independent, which repeated questions are not quite) and bootstraps questions with all their pairs.
"""

ADDED_DEFINITIONS = """\
- **algorithm and r columns**: the training objective (algorithm.name; a record written before the
  option existed ran TRL 1.16's default GRPO loss and counts as dapo), shown where some arm is not
  dapo; lora.r, shown where arms differ in it. The base model trains nothing: "-" in both.
- **capacity** (`capacity.csv`, Figure 3): per arm, its seeds with an evaluation and a trainable
  parameter count above 0 (the base model: with an evaluation). x = trainable parameters: the job's
  count from its record (params.built, else params.planned; for adalora, whose ranks shrink while it
  trains, the parameters of the triplets it kept, adaptive.final_params), per seed, and for the arm the mean over
  its seeds; y = held-out accuracy per seed, and for the arm the mean over seeds with its Student-t
  95% interval (n/a with one seed), as in Table 1. The curve joins, in lora.r order, the uniform arms
  at the full budget; every other trained arm (proportional, random, shuffled, adalora, a reduced
  budget) is a marker at its own count; the base model is a horizontal line at its mean (band: its
  t-interval). One panel per model x task x algorithm x alpha mode, log x axis.
- **landscapes by algorithm**: the uniform arms that differ only in the algorithm (same model, task,
  budget, alpha mode, lora.r), side by side: max/min, top-30% share, Gini, early-late r (Pearson) and
  the attention and FFN module shares as defined above, mean over seeds [t-interval].
- **rank trajectory** (Figure 4; strategies whose ranks move during training: adalora): at each
  recorded training step, a layer's rank = the sum of the `rank` column of its training-phase "B"
  rows of grad_norms.parquet (one per LoRA module) / the number of those rows. Per arm, the mean over
  its seeds when all recorded the same steps and layers, else its first seed's. Printed: over layers,
  the min-max of that rank at the first and at the last recorded step, and its mean at the last step.
- **adalora against uniform**: the same budget, not the same parametrisation. PEFT's AdaLoRA adds
  B diag(E) A x scaled by alpha / init_r on every module whatever rank it has kept (uniform with
  `lora.alpha_mode=fixed`: alpha / r; with the default init_r = 3/2 r, 2/3 of uniform's scale), and starts
  from E = 0 with A and B drawn from N(0, 0.02^2) (uniform: A Kaiming-uniform, B = 0), so its first
  step's A and B gradients are 0 (only E, which the records leave out, has one). Its gradient records
  hold the GRPO loss's gradient alone; the orthogonal regulariser (adalora.orth_reg_weight) is in the
  update, and its weighted gradient norm is in train_log.jsonl (`adalora/orth_reg_grad_norm`). A
  difference between the arms mixes the allocation with these.
"""

REWARD_DEFINITIONS = """\
- **per-reward gradient components** (`profile.per_reward=true`; `grpo_rank/training/reward_split.py`): a
  completion's advantage is the sum over rewards k of A_k = w_k (r_k - the group's mean of r_k) / s, s
  the group's std of the combined reward + 1e-4 (TRL's scaling), and at the step's parameters the loss is
  linear in the advantages, so the step's gradient is exactly G = sum_k G_k + G_kl: G_k the gradient of
  the loss with reward k's share A_k as the advantage, minus the KL term's, and G_kl the KL term's (kept
  when beta > 0). A **component** is a reward (by its config name) or the KL term (`kl`). Their norms do
  not add up to ||G||: each is the norm of its own vector.
- **S_k(l)**: Eq. 2 on component k's gradient (as S(l) above): the sum over layer l's LoRA modules of
  sqrt(||G_k A||^2 + ||G_k B||^2), averaged over the recorded steps of the training phase (of the profile
  phase for a job that recorded only that; the section names such jobs). **max/min**, **top-30% share**
  (k printed in the header) and **Gini** as above, on S_k(l).
- **norm share** of component k: sum_l S_k(l) / sum over all components k' (the KL term included) of
  sum_l S_k'(l): its size against the others', a share of the summed component norms, not of ||G||.
- **layer share** p_k(l) = S_k(l) / sum_l' S_k(l'). **layers dominated** by k (own share largest): the
  layers where p_k(l) is strictly larger than every other component's p_k'(l): shares, not norms,
  because components differ in scale. **layers where its S_k(l) is largest**: where S_k(l) itself is
  strictly larger than every other component's. A tie makes no winner; a component with S_k = 0 in
  every layer has no shares and dominates nothing. Printed as layer ranges (0-based), "none" for none.
- **r with combined**: Pearson r across layers between S_k(l) (equivalently p_k(l)) and the combined
  landscape, S(l) of the step's own gradient (grad_norms.parquet, same phase); n/a when either is
  constant.
- **per-reward arm values**: max/min, top-30% share, Gini, norm share and r with combined are computed
  per seed, then averaged with a Student-t 95% interval (n/a with one seed; values that are not finite
  left out, as in stats.csv); the layer lists are computed once on the arm's mean landscape: the mean
  over its seeds of p_k(l), and of S_k(l), over the seeds with the same components and layers as its
  first (`rewards.csv`: seed `mean`, n = those seeds). Figure 5 draws those mean p_k(l) and the mean
  share of the combined S(l) (dashed), one panel per arm.
- **decomposition residual**: per job, the largest relative residual ||G - sum_k G_k - G_kl|| / ||G||
  over its training steps (result.json's train.reward_split_residual); the section prints the largest
  over the jobs with records. Each extra pass replays its micro-batch's random state, so LoRA dropout
  draws the step's own masks, and a job stops when a step's residual exceeds profile.per_reward_tolerance
  (default 1e-4; float32 rounding gives ~1e-8). A larger one comes from a record written before the
  replay with LoRA dropout > 0, whose extra passes drew other masks.
"""
