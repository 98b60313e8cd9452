"""Little Data's core library: data, augmentation, backbones, levels, training, the model store, prediction.

Importing `core` is cheap: TensorFlow is imported only by the modules that train or predict.
See "How the code is laid out" in the README for what each module holds.
"""

import os

# TensorFlow's C++ start-up chatter hides the messages people need to see.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.2.0"
