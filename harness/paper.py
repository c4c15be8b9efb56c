"""The 3DM-WeConvene paper's training constants, read by training (the recipe's defaults)
and by the report (what counts as a model trained to the paper's length).

Iterations, the learning-rate milestones and the subband-reweighting fine-tune follow
the paper's training section; the λ tables are its rate points per distortion metric.
"""

from __future__ import annotations

PAPER_ITERATIONS = 1_500_000
PAPER_STAGE2_STEPS = 50_000  # the paper's subband-reweighting fine-tune after the 1.5 M steps
# lr /= 10 at 750 k and every 100 k after, as fractions of the paper's run.
PAPER_MILESTONES = tuple(m / PAPER_ITERATIONS for m in range(750_000, PAPER_ITERATIONS, 100_000))
PAPER_LAMBDAS = {
    "mse": (0.0025, 0.0035, 0.0067, 0.013, 0.025, 0.05),
    "ms-ssim": (5.0, 8.0, 16.0, 32.0, 64.0),
}
