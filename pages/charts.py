"""Charts more than one page draws (the Present page's slides reuse the tool pages' charts)."""

import altair as alt
import pandas as pd

from core.experiments.curve_statistics import statistics_per_size
from core.experiments.efficiency_curve import backbone_for, load_points
from core.levels import all_levels, is_tutorial_task
from core.networks.backbones import get_backbone
from core.serving.data_match import DataMatch, data_match
from core.serving.model_store import ModelStore
from core.training.loop import TrainConfig


def curve_frame(summary, levels, backbone: str | None = None) -> pd.DataFrame:
    """One row per level and size: mean, lowest and highest accuracy over seeds (levels on a pretrained
    network: measured with `backbone`, default the default network)."""
    rows = []
    for level in levels:
        for size in statistics_per_size(load_points(summary.fingerprint, level.key, backbone_for(level.key, backbone))):
            rows.append({"level": level.label, "images per class": size.images_per_class, "accuracy": size.mean,
                         "lowest": size.lowest, "highest": size.highest, "seeds": size.seeds})
    return pd.DataFrame(rows)


#: Training and validation curves in the same colours on every page (Train, Present).
SPLIT_SCALE = alt.Scale(domain=["training", "validation"], range=["#1c7ed6", "#d9480f"])


def curve_chart(frame: pd.DataFrame, summary, text_size: int = 11, backbone: str | None = None):
    """The data-efficiency curve: a line and band per level, the tutorial's figures and level 0 of
    `backbone` (default: the default network) marked (their labels at `text_size`: larger on a projector)."""
    scale = alt.Scale(type="log", domain=[min(frame["images per class"].min(), 5), 1000])
    x = alt.X("images per class:Q", scale=scale, title="training images per class (log scale)",
              axis=alt.Axis(values=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]))  # the curve's own sizes, 5 included
    colour = alt.Color("level:N", scale=alt.Scale(scheme="tableau10"), legend=alt.Legend(orient="bottom", labelLimit=400))
    band = alt.Chart(frame).mark_area(opacity=0.18).encode(x=x, y="lowest:Q", y2="highest:Q", color=colour)
    line = alt.Chart(frame).mark_line(point=True).encode(
        x=x, y=alt.Y("accuracy:Q", title="validation accuracy", scale=alt.Scale(zero=False), axis=alt.Axis(format="%")),
        color=colour, tooltip=["level", "images per class", alt.Tooltip("accuracy:Q", format=".2%"),
                               alt.Tooltip("lowest:Q", format=".2%"), alt.Tooltip("highest:Q", format=".2%"), "seeds"])
    layers = [band, line]
    tutorial = [{"images per class": 1000, "accuracy": level.tutorial_accuracy,
                 "what": f"tutorial, level {level.key}: {level.tutorial_accuracy:.1%}"}
                for level in all_levels() if level.tutorial_accuracy is not None]
    if tutorial and is_tutorial_task(summary.classes):  # the tutorial's 2000 photos of cats and dogs: 1000 per class
        marks = alt.Chart(pd.DataFrame(tutorial))
        layers += [marks.mark_point(shape="diamond", size=110, filled=True, color="#495057").encode(
                       x=x, y="accuracy:Q", tooltip=["what"]),
                   marks.mark_text(align="right", dx=-9, fontSize=text_size, color="#495057").encode(
                       x=x, y="accuracy:Q", text="what")]
    # Level 0 of the network the curve's levels 2 and 3 run on: the quick start's MobileNetV2 level 0 was
    # drawn under an EfficientNet-Lite2 curve, unnamed.
    backbone = backbone_for(0, backbone)
    level0 = ModelStore().start_for(0, backbone, summary.classes, TrainConfig(level=0, backbone=backbone).resolved().image_size,
                                    summary.root)
    if level0 and data_match(level0, summary) is DataMatch.CURRENT and level0.val_accuracy is not None:
        found = level0.card.found_grouping  # its groups taken from the photos: it did look at them
        groups = f", ImageNet classes found from {found.photos} photos" if found is not None else ""
        rule = alt.Chart(pd.DataFrame([{"accuracy": level0.val_accuracy,
                                        "what": f"level 0, no training ({get_backbone(backbone).label}{groups}): "
                                                f"{level0.val_accuracy:.1%}"}]))
        layers += [rule.mark_rule(strokeDash=[6, 4], color="#868e96").encode(y="accuracy:Q", tooltip=["what"]),
                   rule.mark_text(align="left", x=6, dy=-round(text_size * 0.65), fontSize=text_size, color="#868e96").encode(
                       y="accuracy:Q", text="what")]
    return alt.layer(*layers).properties(height=420)
