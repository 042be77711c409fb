"""The report's "Definitions" section: every number report.md prints, defined as gradstats.py, tables.py,
capacity.py, trajectories.py, grpo_rank/analysis/stats.py and stats_design.py compute it. `{early}` and
`{late}` are filled with the run's window fractions. ADDED_DEFINITIONS (the capacity curve, the
landscapes by algorithm, the rank trajectories, AdaLoRA against uniform) follows DEFINITIONS in every
report; REWARD_DEFINITIONS only in a report whose per-reward section has numbers (rewards.py)."""

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
- **scaling slope** of a run, against the uniform run of the same seed (same alpha mode; for per_rank
  without per_rank uniform runs the fixed one, the same model at rank lora.r): n(l, m) =
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
- **rank-shift correlation** (the study's definition): per layer, shift = share under the strategy -
  share under uniform (same seed, same alpha mode, or fixed for per_rank as above), correlated with the
  layer's allocated rank (Pearson, Spearman), on each of the three views. Pooled over the (seed, layer)
  pairs; its interval resamples seeds (all S^S resamples when S <= 4), given for >= 2 seeds and crude for
  2-3. On raw norms the scaling alone pushes the shift *against* the rank with fixed alpha and *with* it
  with per_rank; the scaling-normalised and full-weight correlations are what the re-allocation does
  beyond the scaling.
- **rank source**: the run whose S(l) a gradient-aware run's ranks were allocated from. The same-seed
  uniform run is the rank source when the S(l) in the run's record (allocation.importance) equals that
  run's S(l) in the allocation's signal (raw LoRA norms, or the full-weight signal), as shares to a
  relative 1e-4; another run when it differs; assumed to be it when the record has none. When it is,
  the study's correlation regresses to the mean: layers whose share came out high by chance got high
  ranks and fall back in any other run, so with no effect at all r is expected *below* 0, and an
  interval that contains 0 is not the no-effect test.
- **rank-shift r vs independent uniform**: the same correlation with shift = share under the strategy -
  the mean share of uniform runs independent of the rank source: the same-seed uniform run when it is
  not the rank source (a replicate of its configuration), else the uniform runs of every other seed
  (the reference column names them). Per seed, mean over seeds, and pooled with its seed bootstrap, as
  above.
- **no-effect null** of a pooled rank-shift r (both definitions; `stats_design.rank_shift_null`,
  1,000 draws, seed 0): no effect means every run, the strategy's included, is the landscape times
  noise, part of which the runs of one seed share. From the R >= 2 uniform runs of the reference arm:
  landscape g(l) = mean over runs of log share(l); run r's noise e_r(l) = (log share_r(l) - g(l))
  sqrt(R / (R - 1)). The seed-shared fraction lambda (per view, and in the allocation's signal) is the
  correlation, over seeds and layers, of the strategy runs' and their same-seed uniform runs' log
  shares each minus its arm's mean over seeds: sum(u x) / sqrt(sum(u^2) sum(x^2)), clipped to [0, 1]
  (0 with fewer than 2 seeds); with no effect it estimates var(seed part) / var(noise), and an effect
  can only raise it. A noise draw is e_r(pi(l)), r drawn at random and pi a random permutation of the
  layers; a pseudo-run of seed k is exp(g(l) + sqrt(lambda) n_k(l) + sqrt(1 - lambda) n(l)),
  renormalised, n_k one draw for the seed and n one for the run (the same draws in every view of the
  run). Per draw and seed: a pseudo rank source A whose ranks are allocated exactly as the arm's
  (proportional, the seed's total, r_min, r_max and multiple), a pseudo strategy run X of the same
  seed, and references; the study's shift is X - A when the same-seed uniform run is the rank source
  (else X - C, C another run of the seed), the independent shift X - the mean of as many runs of other
  seeds as the seed's independent reference averages (C when the same-seed run is not the rank
  source); the draw's r is pooled over the seeds as observed. Printed: the null's mean [2.5%, 97.5%
  quantiles], and p = min(1, 2 min((1 + #{{null <= r}}) / (1 + K), (1 + #{{null >= r}}) / (1 + K)))
  over its K finite draws (n/a when the uniform runs do not differ: no noise to permute). It assumes
  the noise is exchangeable across layers (after the log-share landscape is taken out).
- **headline**: for each gradient-aware arm (strategy proportional, whose ranks follow the map): the
  pooled rank-shift Pearson r (the study's definition) and the mean max/min amplification on the three
  views. "Beyond scaling" reads the pooled independent Pearson r of the rank-invariant views
  (scaling-normalised, full-weight) against its no-effect null: every one above the null's 97.5%
  quantile: a positive rank-shift correlation remains; every one within its central 95%: none is
  resolved; every one below its 2.5% quantile: the shift runs against the ranks; otherwise the views
  disagree; n/a when no view has a null (fewer than 2 uniform runs).
- **module shares**: each projection type's norm summed over layers, averaged over steps, divided by
  the total; attention = q,k,v,o; FFN = gate,up,down. **Same-shape statistics** repeat max/min,
  top-30% and Gini on one projection type at a time (the same weight shape in every layer), on
  scaling-normalised norms, so that neither projection sizes nor the scaling of a layer's rank can
  drive them (a uniform run's are its raw norms).
- **seed summaries**: a statistic is computed per seed, then averaged; the interval is a Student-t
  95% interval across seeds (n/a with one seed), cut to the statistic's range where it has one
  (correlations [-1, 1]; shares, Gini and accuracy [0, 1]), which keeps its coverage.
- **accuracy**: the fraction of questions correct as the job's eval.scoring counts them; per run its
  95% Wilson score interval [lo, hi] (asymmetric; from the job's result.json), and beside it the
  normal-approximation half-width +-1.96 sqrt(p (1 - p) / n) in accuracy points, which is what the
  study reports as its "Wilson" +- (p = 0.745, n = 200: +-6.04). Across seeds, the mean and a
  t-interval (n/a with one seed). A **deterministic arm**, the base model (strategy none) when no job of
  it sampled (generation do_sample not true), answers the same under every seed: it is one evaluation
  (its first seed's job), shown with its Wilson interval, never a t-interval over copies.
- **tagged / any / well-formed**: per evaluation, the accuracy under scoring `tagged` (only the answer
  inside the last closed <answer></answer> counts), under scoring `any` (also the last \\boxed{{}} or
  the last number, `grpo_rank/objective/answers.py`), and the fraction of replies that are well-formed
  (the format reward's shape, `rewards.well_formed`: <think>...</think><answer>...</answer>, each tag
  once); from the job's record (eval.accuracy_tagged, eval.accuracy_any, eval.well_formed_fraction),
  else each reply of eval_outcomes.jsonl judged again (n/a without replies). Table 1: means over the
  arm's evaluations. Tagged minus any is what the format alone costs.
- **paired tests** (same questions, matched by question id). The references of an arm: the uniform arm of
  its model, task, alpha mode (fixed for per_rank when it has none), algorithm, lora.r and length (for a
  re-allocated strategy), the base model, and, where the arms differ in grpo.steps, the same arm at the
  longest shorter length (does accuracy still rise with training?). A strategy seed is paired with the
  reference's same seed; a deterministic reference (the base model) is its one evaluation for every seed.
  **Per seed pair**: b = questions only the reference got right, c = questions only the strategy got
  right; exact McNemar p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2) (statsmodels); the
  accuracy difference (strategy minus reference) with a 95% percentile bootstrap interval resampling
  questions (10,000 resamples, seed 0). **Across the S >= 2 seed pairs**, on the n questions every pair
  answered (seed pairs share their questions, so their tables are never summed into one McNemar test):
  x_sq = strategy - reference on question q in pair s, d_q = mean_s x_sq and diff = mean_q d_q. p:
  sign-flip permutation test of H0 "each d_q is symmetric about 0": T = sum_q S d_q, p = P(|sum_q eps_q S
  d_q| >= |T|) over the 2^n equally likely signs eps, computed exactly (convolution over the integers S
  d_q) when n (2 sum |S d_q| + 1) <= 5e7, else from 100,000 random sign patterns (seed 0), p = (1 + hits)
  / (1 + 100,000); it is a test over questions given the trained models. Interval: two-level percentile
  bootstrap, 10,000 resamples (seed 0), each drawing S seed pairs with replacement and then, for each
  pair drawn, n of its questions with replacement; the statistic is the mean of the S n values drawn;
  beside it the Student-t 95% interval (S - 1 degrees of freedom) of the S per-pair differences mean_q
  x_sq, which moves with the seeds only.
- **MDE (80%)**, the minimum detectable difference of a paired row: the smallest delta with
  Phi(delta sqrt(n / D) - z) + Phi(-delta sqrt(n / D) - z) >= 0.8, z = Phi^-1(0.975) (two-sided alpha
  0.05; the normal approximation of the row's test), n the row's questions and D its observed
  discordance: (b + c) / n for a seed pair, mean_q d_q^2 across pairs (the sign-flip test's null
  variance of the mean is D / n). About 2.80 sqrt(D / n): 100 questions at 20% discordance give 0.125.
  n/a when D = 0. A difference smaller than the MDE going undetected says little.
"""

ADDED_DEFINITIONS = """\
- **algorithm and r columns**: the training objective (algorithm.name; a record written before the
  option existed ran TRL 1.16's default GRPO loss and counts as dapo), shown where some arm is not
  dapo; lora.r, shown where arms differ in it, and likewise steps (grpo.steps, the training length). The
  base model trains nothing: "-" in each.
- **capacity** (`capacity.csv`, Figure 3): per arm, its seeds with an evaluation and a trainable
  parameter count above 0 (the base model: with an evaluation). x = trainable parameters: the job's
  count from its record (params.built, else params.planned; for adalora, whose ranks shrink while it
  trains, the parameters of the triplets it kept, adaptive.final_params), per seed, and for the arm the mean over
  its seeds; y = held-out accuracy per seed, and for the arm the mean over seeds with its Student-t
  95% interval (n/a with one seed), as in Table 1; a deterministic arm (the base model under greedy
  decoding) is its one evaluation with its Wilson interval. The curve joins, in lora.r order, the
  uniform arms at the full budget; every other trained arm (proportional, random, shuffled, adalora, a
  reduced budget) is a marker at its own count; the base model is a horizontal line at its accuracy
  (band: its interval). One panel per model x task x algorithm x alpha mode, log x axis.
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
  per seed, then averaged with a Student-t 95% interval (cut to [0, 1] or [-1, 1] as the seed summaries;
  n/a with one seed; values that are not finite left out, as in stats.csv); the layer lists are
  computed once on the arm's mean landscape: the mean over its seeds of p_k(l), and of S_k(l), over
  the seeds with the same components and layers as its first (`rewards.csv`: seed `mean`, n = those
  seeds). Figure 5 draws those mean p_k(l) and the mean share of the combined S(l) (dashed), one panel
  per arm.
- **decomposition residual**: per job, the largest relative residual ||G - sum_k G_k - G_kl|| / ||G||
  over its training steps (result.json's train.reward_split_residual); the section prints the largest
  over the jobs with records. Each extra pass replays its micro-batch's random state, so LoRA dropout
  draws the step's own masks, and a job stops when a step's residual exceeds profile.per_reward_tolerance
  (default 1e-4; float32 rounding gives ~1e-8). A larger one comes from a record written before the
  replay with LoRA dropout > 0, whose extra passes drew other masks.
"""
