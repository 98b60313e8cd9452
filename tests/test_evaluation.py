"""Evaluation results: the mistakes, most confidently wrong first (core.serving.evaluation)."""

import numpy as np

from core.serving.evaluation import Evaluation, Mistake


def test_mistakes_are_the_wrong_photos_most_confident_first():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.4, 0.6], [0.45, 0.55]])
    labels = np.array([0, 0, 1, 0, 0])  # photos 1, 3 and 4 are wrong
    result = Evaluation(accuracy=0.4, n=5, classes=["cats", "dogs"], per_class_accuracy={}, confusion=[],
                        probabilities=probabilities, labels=labels, paths=[f"p{i}.jpg" for i in range(5)])
    mistakes = result.mistakes()
    assert [m.path for m in mistakes] == ["p1.jpg", "p3.jpg", "p4.jpg"]
    assert mistakes[0] == Mistake(path="p1.jpg", true_class="cats", predicted_class="dogs", confidence=0.7,
                                  probabilities={"cats": 0.3, "dogs": 0.7})
    assert [m.path for m in result.mistakes(limit=1)] == ["p1.jpg"]
