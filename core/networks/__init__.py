"""Networks: the backbone registry and its weights, EfficientNet-Lite and its checkpoint reader,
the model factories of every level, custom layers, batch-norm folding, ImageNet classes, and
bottleneck feature extraction with its cache.

Depends on `core.data` and the base modules.
"""
