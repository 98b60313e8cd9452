"""The train function of each built-in level: what `core.levels` names as `train`.

Each takes a `core.training.loop.Run` (resolved config, decoded data, store, progress) and returns a
`core.training.loop.RecipeResult`. The networks themselves come from the factories in `core.networks.factories`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from core.networks.backbones import (
    BACKBONES,
    count_flops,
    get_backbone,
    resolve_weights,
)
from core.errors import Cancelled
from core.networks.features import bottleneck_parts, feature_cache_path, feature_dataset, network_features
from core.serving.model_store import ModelError, load_model
from core.training.loop import Run, RecipeResult, TrainingError, with_augmentation

if TYPE_CHECKING:
    from core.networks.imagenet import FoundGrouping


def train_small_convnet(run: Run) -> RecipeResult:
    """Level 1: a small convnet from random weights (the tutorial's, or `arch`), with augmentation and dropout."""
    from core.networks.factories import (
        SMALL_CONVNET_FACTORIES,
        as_float32,
        build_in_precision,
    )

    config = run.config
    factory = SMALL_CONVNET_FACTORIES[config.arch or "tutorial"]
    model = build_in_precision(lambda: factory(run.num_classes, config.image_size, config.dropout), config.precision)
    trainee = with_augmentation(model, run.augmenter())  # augmentation stays float32
    run.compile(trainee)
    history, cancelled = run.fit(trainee, run.train_dataset(), run.val_dataset())
    return RecipeResult(as_float32(model), history, cancelled)


def train_bottleneck_classifier(run: Run) -> RecipeResult:
    """Level 2: a frozen pretrained network's features, computed once and cached; a small head on them."""
    from core.networks.factories import attach_head, make_feature_extractor, make_head

    config = run.config
    backbone = get_backbone(config.backbone)
    weights = resolve_weights(backbone, config.weights)
    run.phase("extract", f"Loading {backbone.label} ({weights.source})")
    extractor = make_feature_extractor(backbone, weights, config.image_size)
    t0 = time.monotonic()
    features, extracted = {}, 0
    for name, split, mirror in bottleneck_parts(config.flip_average):
        decoded = run.train_data if split == "train" else run.val_data
        features[name], computed = network_features(
            extractor, decoded, config.cache_dir, config.backbone, weights.key, config.image_size,
            run.summary.fingerprint, split, mirror=mirror, should_cancel=run.should_cancel,
            progress=lambda done, total, name=name: run.phase(f"extract-{name}", f"Extracting {name} features",
                                                              done, total))
        extracted += computed
    run.timings["extract"] = time.monotonic() - t0
    if extracted:
        run.timings["extract_images_per_s"] = extracted / max(run.timings["extract"], 1e-9)

    head = make_head(features["train"].shape[1:], run.num_classes, config.dropout)
    run.compile(head)
    history, cancelled = run.fit(head, feature_dataset(features["train"], run.train_data.labels, config.batch_size,
                                                       shuffle_seed=config.seed),
                                 feature_dataset(features["validation"], run.val_data.labels, 256))
    views = [head.predict(features[name], batch_size=256, verbose=0)
             for name in ("validation", "mirrored") if name in features]
    return RecipeResult(attach_head(extractor, head), history, cancelled,
                   {"weights": weights.source, "weights_key": weights.key, "backbone_flops": count_flops(extractor)},
                   val_outputs=views)


def train_fine_tuning(run: Run) -> RecipeResult:
    """Level 3: level 2's trained model with the backbone's top block unfrozen, SGD and augmentation."""
    from core.networks.factories import prepare_fine_tuning, single_view
    from core.networks.fold import fold_batch_norm

    config = run.config
    backbone = get_backbone(config.backbone)
    required = config.level_definition.requires
    start = run.store.start_for(required, config.backbone, run.summary.classes, config.image_size, run.summary.root)
    if start is None:
        raise TrainingError(
            f"Level {config.level} fine-tunes a trained level-{required} classifier, and there is none for "
            f"{config.backbone} at {config.image_size[0]}x{config.image_size[1]} with classes "
            f"{run.summary.classes}. Train level {required} first (random dense weights would wreck the "
            "pretrained features).")
    try:
        model = single_view(load_model(start))  # fine-tune the network, not its mirror-averaging wrapper
    except ModelError as exc:
        raise TrainingError(f"The level-{required} model to start from is unusable: {exc}") from exc
    prepare_fine_tuning(model, backbone, config.top_block)
    card_fields = {"weights": start.card.weights, "weights_key": start.card.weights_key, "started_from": start.id,
                   "backbone_flops": count_flops(model.get_layer(backbone.name))}
    on_one_process = run.placement is None or run.placement.kind != "multi_worker"
    if config.views and on_one_process:
        return _fine_tune_on_cached_views(run, model, backbone, card_fields)
    # The frozen layers' batch norms folded into their convolutions: the same steps, fewer passes over the
    # activations. The top block and head are shared, so training the folded copy trains `model`.
    trainee = with_augmentation(fold_batch_norm(model), run.augmenter())
    run.compile(trainee)
    history, cancelled = run.fit(trainee, run.train_dataset(), run.val_dataset(32))
    return RecipeResult(model, history, cancelled,
                        {**card_fields, "hyperparameters": {"views": 0, "unfrozen_layers": _unfrozen_layers(model)}})


def _fine_tune_on_cached_views(run: Run, model, backbone, card_fields: dict) -> RecipeResult:
    """Level 3 on cached views: the frozen layers run once per view of each photo, the top block every epoch.

    `model`'s top block is unfrozen already; the top trained here shares its layers, so `model` is
    what comes out fine-tuned, the same network as the tutorial's way gives.
    """
    from core.data.augment import AugmentConfig
    from core.networks.cut import split_at_top_block
    from core.training.view_cache import ViewBatches, ViewCacheKey, cached_views, view_names

    config = run.config
    split = split_at_top_block(model, backbone, backbone.top_block_prefixes(config.top_block))
    t0 = time.monotonic()
    # Random weights ("none") differ from one level-2 run to the next: their activations belong to that model.
    weights = card_fields["weights_key"]
    common = dict(fingerprint=run.summary.fingerprint, backbone=config.backbone,
                  weights_key=weights if weights and weights != "none" else f"model {card_fields['started_from']}",
                  image_size=tuple(config.image_size), cut_layer=split.cut_layer)
    # The validation photos (and their mirror images, which the saved model averages in) in float32:
    # their outputs are the saved model's scores.
    photo_and_mirror = AugmentConfig(horizontal_flip=True)
    parts = [("train", run.train_data, ViewCacheKey(**common, augment=config.augment, views=config.views,
                                                    split="train"), np.float16),
             ("validation", run.val_data, ViewCacheKey(**common, augment=photo_and_mirror,
                                                       views=2 if config.flip_average else 1,
                                                       split="validation"), np.float32)]
    views, computed = {}, 0
    for name, decoded, key, dtype in parts:
        count = len(view_names(key.augment, key.views))
        views[name], cached = cached_views(
            split.bottom, decoded, key, config.cache_dir, dtype=dtype, should_cancel=run.should_cancel,
            progress=lambda done, total, name=name, count=count: run.phase(
                f"views-{name}", f"Running the frozen layers on {count} view(s) of each {name} photo", done, total))
        computed += 0 if cached else views[name].shape[0] * views[name].shape[1]
    run.timings["views"] = time.monotonic() - t0
    if computed:
        run.timings["views_images_per_s"] = computed / max(run.timings["views"], 1e-9)

    run.compile(split.top)
    val_views = [np.asarray(view) for view in views["validation"]]  # read from the cache once: fit, then score
    history, cancelled = run.fit(split.top, ViewBatches(views["train"], run.train_data.labels,
                                                        run.global_batch_size, config.seed),
                                 (val_views[0], run.val_data.labels))
    used = view_names(config.augment, config.views)
    if cancelled:
        return RecipeResult(model, history, cancelled)
    outputs = [split.top.predict(view, batch_size=64, verbose=0) for view in val_views]
    return RecipeResult(model, history, cancelled,
                        {**card_fields, "hyperparameters": {"views": len(used), "view_names": used,
                                                            "cut_layer": split.cut_layer,
                                                            "unfrozen_layers": _unfrozen_layers(model)}},
                        val_outputs=outputs)


def _unfrozen_layers(model) -> int:
    """Layers with weights that train (the top block's and the head's)."""
    from core.networks.backbones import leaf_layers

    return sum(1 for layer in leaf_layers(model) if layer.trainable and layer.trainable_weights)


def build_grouped_classifier(run: Run) -> RecipeResult:
    """Level 0: no training; the backbone's ImageNet classifier with its classes grouped into ours.

    The groups are the ones given, else the built-in ones (cats and dogs), else found from the training
    photos (`core.networks.imagenet.find_grouping`): the ImageNet classes the network sees most in each
    class's photos. Nothing is trained; the card says which groups were found and from how many photos.
    """
    from core.networks.factories import group_classes, make_imagenet_classifier
    from core.networks.imagenet import check_grouping, default_grouping
    from core.networks.layers import ClassGroups

    config = run.config
    backbone = get_backbone(config.backbone)
    if backbone.classifier is None:
        offered = ", ".join(name for name, b in BACKBONES.items() if b.classifier)
        raise TrainingError(f"Level {config.level} needs a backbone with its ImageNet classifier ({offered}); "
                            f"{backbone.label} has none registered.")
    classes = run.summary.classes
    weights = resolve_weights(backbone, config.weights, with_classifier=True)
    run.phase("build", f"Loading {backbone.label}'s ImageNet classifier ({weights.source})")
    imagenet = make_imagenet_classifier(backbone, weights, config.image_size)
    hyperparameters = {"class_groups": ClassGroups.MEAN}
    grouping = config.imagenet_classes or default_grouping(classes)
    if grouping is None:
        found = _find_grouping(run, imagenet, backbone)
        grouping = found.grouping
        hyperparameters["found_imagenet_classes"] = {"photos": found.photos, "per_class": found.per_class,
                                                     "held_out_accuracy": found.held_out_accuracy}
    grouping = check_grouping(grouping, classes)
    model = group_classes(imagenet, [grouping[c] for c in classes])
    return RecipeResult(model, {}, card_fields={"weights": weights.source, "weights_key": weights.key,
                                           "backbone_flops": count_flops(model.get_layer(backbone.name)),
                                           "imagenet_classes": grouping, "hyperparameters": hyperparameters},
                   val_outputs=_grouped_outputs_from_features(run, model, backbone))


def _find_grouping(run: Run, imagenet, backbone) -> FoundGrouping:
    """Each class's ImageNet classes, found from the training photos' ImageNet probabilities (from their
    cached features where it can, else from the classifier's own pass)."""
    from core.data.decoded import decode_split
    from core.networks.imagenet import find_grouping

    config = run.config
    train_data = decode_split(run.summary, "train", config.image_size, cache_dir=config.cache_dir,
                              progress=lambda done, total: run.phase("decode-train", "Decoding training photos",
                                                                     done, total))
    if len(train_data) == 0:
        raise TrainingError("Level 0 finds each class's ImageNet classes from the training photos, and there are "
                            "none: add photos to train/<class>/, or give the ImageNet classes.")
    probabilities = None
    try:
        probabilities = _imagenet_probabilities_from_features(run, imagenet, backbone, train_data)
    except Cancelled:
        raise
    except Exception:  # noqa: BLE001 - no-top weights that cannot be had, a cache that cannot be written: run the classifier
        probabilities = None
    if probabilities is None:
        chunks = []
        for start in range(0, len(train_data), 32):
            if run.should_cancel():
                raise Cancelled()
            run.phase("extract-train", "Looking at the training photos", start, len(train_data))
            chunks.append(imagenet.predict(np.asarray(train_data.images[start:start + 32], np.float32), verbose=0))
        probabilities = np.concatenate(chunks)
    run.phase("build", "Finding the ImageNet classes of each class")
    return find_grouping(probabilities, np.asarray(train_data.labels), run.summary.classes)


def _imagenet_probabilities_from_features(run: Run, imagenet, backbone, decoded) -> np.ndarray | None:
    """The training photos' ImageNet probabilities from their pooled features, through the feature caches as
    level 2's go (so after level 2 nothing is computed, and level 2 reuses them after level 0). None for
    random weights (each network built from them differs, and their features are never cached) or when
    the classifier disagrees with its top on the features."""
    from core.networks.factories import make_feature_extractor
    from core.networks.features import LazyExtractor

    config = run.config
    notop = resolve_weights(backbone, config.weights)
    if notop.keras_arg is None:
        return None
    extractor = LazyExtractor(lambda: make_feature_extractor(backbone, notop, config.image_size))
    features, _ = network_features(
        extractor, decoded, config.cache_dir, config.backbone, notop.key, config.image_size,
        run.summary.fingerprint, "train", should_cancel=run.should_cancel,
        progress=lambda done, total: run.phase("extract-train", "Looking at the training photos", done, total))
    probabilities = _top_on_features(imagenet, backbone, features)
    return probabilities if _agrees_on_first_photos(imagenet, decoded, probabilities) else None


def _top_on_features(model, backbone, features: np.ndarray) -> np.ndarray:
    """What `model` (level 0's network, or its ImageNet classifier) answers for photos whose pooled features
    from its base are `features`: the layers above the base, without running the network again."""
    import keras

    x = features
    for layer in model.layers[model.layers.index(model.get_layer(backbone.name)) + 1:]:
        if not isinstance(layer, keras.layers.GlobalAveragePooling2D):  # the features are pooled already
            x = layer(x)
    return np.asarray(x)


def _agrees_on_first_photos(model, decoded, outputs: np.ndarray) -> bool:
    """Whether the full `model` gives `outputs` on the first photos: features of other weights (another file
    under the same network's name) are never mixed in."""
    photos = np.asarray(decoded.images[:4], np.float32)
    return bool(np.allclose(model.predict(photos, verbose=0), outputs[:len(photos)], atol=1e-4))


def _grouped_outputs_from_features(run: Run, model, backbone) -> list[np.ndarray] | None:
    """Level 0's validation outputs (photo, mirror image) from level 2's cached features, if any.

    Level 2 caches the base's pooled features of the same photos; level 0's ImageNet top on them
    gives its outputs without running the network again (the quick start trains both). They are
    used only when the full network agrees on a few photos, so other weights are never mixed in.
    """
    config = run.config
    try:
        notop = resolve_weights(backbone, config.weights)
    except Exception:  # noqa: BLE001 - no cached features to use; the full network will be run
        return None
    paths = [feature_cache_path(config.cache_dir, run.summary.fingerprint, config.backbone, notop.key,
                                config.image_size, "validation", mirror=mirror) for mirror in (False, True)]
    try:
        features = [np.load(path) for path in paths if path.exists()]
    except (OSError, ValueError):
        return None
    if len(features) != 2 or any(len(f) != len(run.val_data) for f in features):
        return None
    views = [_top_on_features(model, backbone, view) for view in features]
    return views if _agrees_on_first_photos(model, run.val_data, views[0]) else None
