"""Do two model stores' models answer the same, photo by photo? (A refactor must not change answers.)

    python scripts/compare_stores.py OLD_MODELS_DIR NEW_MODELS_DIR --levels 0,2 \
        [--data-dir ../shared/datasets/cats_vs_dogs] [--split validation]

For each level, the newest model in each store predicts every photo of the split (raw probabilities,
before any calibration); prints each model's number of right answers, on how many photos the two
give the same answer, and the largest difference between their probabilities.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import settings  # noqa: E402


def main() -> int:
    from core.data.decoded import decode_split
    from core.data.folders import summarize
    from core.serving.model_store import ModelStore
    from core.serving.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--levels", default="0,2")
    parser.add_argument("--data-dir", default=str(settings.PROJECT_ROOT.parent / "shared" / "datasets" / "cats_vs_dogs"))
    parser.add_argument("--split", default="validation")
    args = parser.parse_args()
    summary = summarize(args.data_dir)
    for level in (int(k) for k in args.levels.split(",")):
        answers = []
        for root in (args.old, args.new):
            entry = ModelStore(root).latest(level)
            if entry is None:
                print(f"level {level}: no model in {root}")
                return 1
            predictor = Predictor(entry)
            decoded = decode_split(summary, args.split, entry.image_size)
            probs = predictor.predict_rows(decoded.images, calibrated=False)
            answers.append(probs)
            right = int((probs.argmax(1) == np.asarray(decoded.labels)).sum())
            print(f"level {level} {entry.id}: {right} of {len(decoded)} right")
        same = int((answers[0].argmax(1) == answers[1].argmax(1)).sum())
        print(f"level {level}: the same answer on {same} of {len(answers[0])} photos; "
              f"largest probability difference {float(np.abs(answers[0] - answers[1]).max()):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
