"""The real `weights="imagenet"` path: Keras' own cache lookup, fed from ../shared offline."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from core.networks.backbones import get_backbone, resolve_weights
    from core.networks.factories import make_feature_extractor
    backbone = get_backbone("mobilenet_025")
    resolved = resolve_weights(backbone, "imagenet")
    extractor = make_feature_extractor(backbone, resolved)
    base = extractor.get_layer("mobilenet_025")
    reference = get_backbone("mobilenet_025").build(sys.argv[1])
    same = all(np.array_equal(a, b) for a, b in zip(base.get_weights(), reference.get_weights()))
    print(json.dumps({"keras_arg": resolved.keras_arg, "same_as_file": same}))
""")


@pytest.mark.slow
def test_imagenet_weights_come_through_keras_cache(shared, tmp_path):
    cache = shared / "weights" / "keras_cache" / "models"
    keras_home = tmp_path / "keras_home"
    (keras_home / "models").mkdir(parents=True)
    shutil.copy(cache / "mobilenet_2_5_224_tf_no_top.h5", keras_home / "models")
    env = {**os.environ, "KERAS_HOME": str(keras_home), "LITTLE_DATA_SHARED_DIR": str(tmp_path / "none"),
           "LITTLE_DATA_WEIGHTS_DIR": "", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(cache / "mobilenet_2_5_224_tf_no_top.h5")],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"keras_arg": "imagenet", "same_as_file": True}
