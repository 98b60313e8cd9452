"""Little Data's core library: data, augmentation, backbones, levels, training, the model store, prediction.

Importing `core` is cheap: TensorFlow is imported only by the modules that train or predict.
Each subpackage's docstring says what it holds; docs/architecture.md has the map.
"""

import os

# TensorFlow's C++ start-up chatter hides the messages people need to see.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.2.0"
