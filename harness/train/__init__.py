"""Training: one λ trial (``loop``) and the Ray Tune sweep over λ (``sweep``)."""
