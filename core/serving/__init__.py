"""Trained models in use: model cards, the model store, prediction (one model, every level, a shared
trunk), evaluation, explanations (Grad-CAM) and export to other formats.

Depends on `core.networks`, `core.data` and the base modules; never on training.
"""
