"""The report's "Definitions" section: every number report.md prints, defined as gradstats.py, tables.py
and grpo_rank/stats.py compute it. `{early}` and `{late}` are filled with the run's window fractions."""

DEFINITIONS = """\
- **S(l)**, the importance of layer l: the sum over the layer's LoRA modules of each module's gradient
  norm sqrt(||grad A||^2 + ||grad B||^2) (before clipping), averaged over the training steps (the
  study's Eq. 2; `grpo_rank/importance.py`). Its **share** is S(l) / sum over layers of S.
- **max/min**: max_l S(l) / min_l S(l), over the per-layer means S(l).
- **top-30% share (k = ... of L)**: the layers sorted by S(l), descending; the share carried by the
  first k = round(0.3 L) of them, halves rounded up (L = 28 gives 8, L = 30 gives 9, L = 12 gives 4,
  L = 10 gives 3); k is printed beside the statistic.
- **Gini**: sum_i sum_j |S_i - S_j| / (2 L^2 mean S), 0 for equal shares, (L-1)/L at the extreme.
- **CV**: population standard deviation of S(l) over layers / its mean.
- **early-vs-late stability**: S(l) over the first ceil({early} T) steps vs over the last ceil({late} T)
  of the T recorded steps; Pearson r and Spearman rho across layers. 1: the ranking seen early holds.
- **LoRA scaling, and what it alone does to gradient norms**: PEFT multiplies a LoRA module's output by
  s(r): alpha / r with `lora.alpha_mode=fixed` (the study's setting), alpha / sqrt(r) with `rslora`,
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
  **At init**: the same on the first recorded training step's norms alone, where the prediction holds
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
