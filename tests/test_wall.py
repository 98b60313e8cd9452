"""core.app.wall: the audience's photos, in memory only, with limits that say what happened."""

import numpy as np
import pytest
from PIL import Image

from core.app.wall import TooManyPhotos, Wall, answers_of
from core.serving.novelty import Verdict
from core.serving.predictor import MultiPrediction


def answered(name="cat.jpg", dogs=0.2, refused_by=(), size=(2000, 1500)) -> MultiPrediction:
    result = MultiPrediction(name, image=Image.new("RGB", size, (120, 80, 40)))
    for level in (0, 2):
        result.per_level[level] = {"cats": 1 - dogs, "dogs": dogs}
    for level in refused_by:
        result.verdicts[level] = Verdict(novelty=0.9, threshold=0.5)
    return result


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_newest_first_answers_flags_and_a_small_jpeg():
    wall = Wall()
    first = wall.add("phone-a", answered("a.jpg"))
    second = wall.add("phone-b", answered("b.jpg", refused_by=(2,)))
    assert [p.name for p in wall.photos()] == ["b.jpg", "a.jpg"]
    assert first.answers[0].label == "cats" and first.answers[0].probability == pytest.approx(0.8)
    assert not first.flagged and first.disagreement is None
    assert second.refused_by == [2] and second.flagged and second.answers[2].label is None
    assert "level 2 says none of these" in second.disagreement
    assert max(second.image().size) == 720 and second.jpeg[:2] == b"\xff\xd8"


def test_each_phone_is_limited_per_minute_with_a_clear_message():
    clock = Clock()
    wall = Wall(per_phone_per_minute=3, clock=clock)
    for _ in range(3):
        wall.admit("phone-a")
    with pytest.raises(TooManyPhotos, match=r"3 photos this minute.*try again in \d+ s"):
        wall.admit("phone-a")
    wall.admit("phone-b")  # another phone is not held back
    clock.now += 61
    wall.admit("phone-a")


def test_the_wall_keeps_the_last_n_hides_and_clears():
    wall = Wall(max_photos=3)
    photos = [wall.add("p", answered(f"{i}.jpg")) for i in range(5)]
    assert [p.name for p in wall.photos()] == ["4.jpg", "3.jpg", "2.jpg"]
    version = wall.version
    wall.hide(photos[3].id)
    assert [p.name for p in wall.photos()] == ["4.jpg", "2.jpg"] and len(wall.photos(include_hidden=True)) == 3
    assert wall.version > version
    wall.attach_heatmaps(photos[4].id, {2: np.ones((3, 3))})
    assert wall.get(photos[4].id).heatmaps[2].shape == (3, 3)
    wall.clear()
    assert wall.photos(include_hidden=True) == [] and len(wall) == 0


def test_answers_of_skips_levels_whose_model_failed():
    result = answered()
    result.model_errors[3] = "unreadable"
    assert sorted(answers_of(result)) == [0, 2]
    with pytest.raises(ValueError):
        Wall().add("p", MultiPrediction("broken.jpg", error="not an image"))
