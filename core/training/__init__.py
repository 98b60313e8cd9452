"""Training: the recipe of each level, the training loop, progress events, time estimates, and
running on several devices or Ray workers.

Depends on `core.serving` (to score and save what it trains), `core.networks`, `core.data` and the
base modules.
"""
