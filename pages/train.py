"""Train: one card per level; training runs in a worker process, progress is read from disk."""


import altair as alt
import pandas as pd
import streamlit as st

from core.app import jobs
from core.app import workspace
from core.data.augment import PRESET_LABELS, preset
from core.networks.backbones import BACKBONES, DEFAULT_BACKBONE
from core.errors import ConfigError
from core.training.estimate import estimate
from core.networks.imagenet import class_names, default_grouping, describe_group
from core.levels import LEVELS, SMALL_CONVNETS, Level, all_levels, format_duration
from core.serving.model_store import ModelError, ModelStore
from core.training.loop import TrainConfig
from pages.common import current_summary, ensure_app_shell, latest_models, level_label, page_header, start_button_ui
from pages.charts import SPLIT_SCALE

LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3]


def history_charts(history: dict, height: int = 260) -> list:
    """The accuracy and loss curves, one chart each (empty without a history: a level that trains nothing)."""
    rows = []
    for key, values in history.items():
        split = "validation" if key.startswith("val_") else "training"
        metric = key.removeprefix("val_")
        rows += [{"epoch": i + 1, "value": v, "metric": metric, "split": split} for i, v in enumerate(values)]
    if not rows:
        return []
    data = pd.DataFrame(rows)
    return [alt.Chart(data[data.metric == metric]).mark_line(point=True).encode(
                x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)), y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
                color=alt.Color("split:N", title=None, legend=alt.Legend(orient="top"),
                                scale=SPLIT_SCALE),
                tooltip=["epoch", "split", alt.Tooltip("value:Q", format=".4f")]).properties(height=height)
            for metric in ("accuracy", "loss") if (data.metric == metric).any()]


def history_ui(history: dict) -> None:
    """The curves side by side, each as wide as its column (one above the other on a phone)."""
    charts = history_charts(history)
    for column, chart in zip(st.columns(len(charts)) if charts else [], charts):
        column.altair_chart(chart, width="stretch")


def saved_model_ui(entry, named: bool) -> None:
    """What one saved model scores, from its card; `named` puts its level above (a sequence saves several)."""
    card = entry.card
    if named:
        st.markdown(f"**{level_label(card.level)}**" + (f" · {card.backbone}" if card.backbone else "")
                    + f" · `{entry.id}`")
    metrics, trained = card.metrics, bool(card.history)
    tutorial = LEVELS[card.level].tutorial_accuracy_for(card.classes) if card.level in LEVELS else None
    columns = st.columns(4)
    columns[0].metric("Validation accuracy", f"{metrics.val_accuracy:.1%}" if metrics.val_accuracy is not None else "–",
                      help="What the saved model scores on the validation photos"
                           + (", averaging each photo with its mirror image." if card.flip_average else "."))
    if trained:
        last, best = metrics.last_epoch_val_accuracy, metrics.best_val_accuracy
        columns[1].metric("Last epoch", f"{last:.1%}" if last is not None else "–",
                          help="The curve's last point: one view of each validation photo.")
        columns[2].metric("Best epoch", f"{best:.1%}" if best is not None else "–",
                          help=f"Epoch {metrics.best_epoch}." if metrics.best_epoch else None)
    else:
        columns[1].caption("No epochs: this level trains nothing.")
    if tutorial is not None:  # the tutorial had no level 0
        columns[3].metric("The tutorial reported", f"{tutorial:.1%}")
    history_ui(card.history)


@st.fragment(run_every=1.0)
def job_ui():
    """Redrawn every second while a job runs; reloads and clicks elsewhere don't touch the worker."""
    job = jobs.current_job()
    if job is None:
        st.caption("No job has run from the app yet" + (": the trained models in the sidebar were made from the command line."
                                                          if latest_models() else "."))
        return
    active = job.active
    if job.kind in ELSEWHERE:
        page = ELSEWHERE[job.kind]
        if active:
            st.caption(f":material/hourglass_top: Running: {job.title}, on **{page}**. {job.status_text}")
        else:
            st.caption(f"Last job: {job.title} ({job.state.value}), on **{page}**."
                       + (f" {job.error}" if job.error else ""))
    else:
        training_job_ui(job)
    if not active and st.session_state.get("was_active"):
        st.session_state["was_active"] = False
        st.rerun(scope="app")  # refresh the cards and sidebar once a job ends
    st.session_state["was_active"] = active


#: Jobs that are not training runs, and the page that shows them.
ELSEWHERE = {jobs.JobKind.CURVE: "How little data", jobs.JobKind.SWEEP: "Curves & comparison",
             jobs.JobKind.LABELS: "Data"}


def training_job_ui(job: jobs.Job) -> None:
    """A training run or a sequence of them (the quick start): progress, then how it ended."""
    configs = job.train_configs
    config = configs[(job.step or 1) - 1] if job.step and job.step <= len(configs) else (configs[-1] if configs else None)
    state = job.state
    progress = job.progress
    with st.container(border=True):
        if config is None:
            title = f"**{job.title.capitalize()}**"
        else:
            title = f"**{level_label(config.level)}**" + (f" · {config.backbone}" if config.backbone else "")
        if job.kind is jobs.JobKind.SEQUENCE and state is jobs.JobState.SUCCEEDED:
            title = f"**{job.title.capitalize()}**"  # every step is done: each saved model is shown below
        elif job.kind is jobs.JobKind.SEQUENCE:
            title = f"**{job.title.capitalize()}**, step {job.step or 1} of {len(configs)}: " + title
        if job.active:
            st.markdown(f":material/hourglass_top: {title} — training")
            fraction, eta = progress.fraction, progress.eta_seconds
            if progress.phase == "train" and fraction is not None:
                st.progress(fraction, text=f"Epoch {progress.epoch}/{progress.epochs} · batch "
                                           f"{progress.batch or 0}/{progress.batches}"
                                           + (f" · about {format_duration(eta)} left" if eta else ""))
            else:
                st.progress(fraction or 0.0, text=job.status_text)
            if st.button("Cancel training", icon=":material/stop_circle:", key=f"cancel_{job.id}"):
                jobs.cancel_job(job.id)
                st.toast("Cancelling after the current batch…")
        elif state is jobs.JobState.SUCCEEDED:
            ids = job.model_ids or [job.model_id]
            st.markdown(f":material/check_circle: {title} — done in {format_duration(job.seconds or 0)}, "
                        f"saved as " + ", ".join(f"`{model_id}`" for model_id in ids))
            store = ModelStore()
            for model_id in ids:
                try:
                    saved_model_ui(store.get(model_id), named=len(ids) > 1)
                except ModelError:
                    st.caption(f"`{model_id}` has been deleted since.")
            return
        elif state is jobs.JobState.CANCELLED:
            st.markdown(f":material/stop_circle: {title} — {job.message or 'cancelled; nothing was saved.'}")
        else:
            st.error(f"{title} failed: {job.error or 'unknown error'}")
        history_ui(progress.history)


FIND_THEM = ("Leave them empty and level {key} finds them from your training photos: for each class, the ImageNet "
             "classes the network sees most in its photos (looking at the photos, nothing is trained).")


def imagenet_classes_ui(level: Level, summary) -> tuple[dict[str, list[int]] | None, bool]:
    """Which ImageNet classes make up each class of the data set: (the grouping picked, or None to use the
    built-in one or let level 0 find one; whether the picks are complete enough to start)."""
    built_in = default_grouping(summary.classes)
    try:
        names = class_names(download=False)
    except ConfigError:
        if built_in:
            st.caption(f"ImageNet classes: the built-in grouping for {' and '.join(summary.classes)}.")
        else:
            if not _found_grouping_ui(level):
                st.caption(f"ImageNet classes: level {level.key} finds them from your training photos (the ImageNet "
                           "classes the network sees most in each class's photos).")
            if st.button("Download ImageNet's class names (35 kB) to pick them yourself",
                         key=f"imagenet_names_{level.key}"):
                try:
                    with st.spinner("Downloading…"):
                        class_names(download=True)
                    st.rerun()
                except ConfigError as failure:
                    st.error(str(failure))
        return None, True
    title = "ImageNet classes that make up each class" + (" (built in for these classes)" if built_in else "")
    grouping = {}
    with st.expander(title, expanded=False):
        if not built_in:
            st.caption(FIND_THEM.format(key=level.key))
        for name in summary.classes:
            grouping[name] = st.multiselect(
                f"**{name}**", list(range(1000)), default=(built_in or {}).get(name, []), key=f"imagenet_{level.key}_{name}",
                format_func=lambda i: f"{i} {names[i].replace('_', ' ')}", placeholder="Type to search ImageNet classes")
    if built_in and grouping == built_in:
        counts = ", ".join(f"{name}: {len(indices)} ImageNet classes" for name, indices in built_in.items())
        st.caption(f"ImageNet classes: built in ({counts}).")
        return grouping, True
    if not any(grouping.values()):
        if built_in:
            st.info(f"Pick at least one ImageNet class for each class to build level {level.key}.")
            return None, False
        found = _found_grouping_ui(level)
        if not found:
            st.caption(f"ImageNet classes: level {level.key} finds them from your training photos.")
        return None, True
    if not all(grouping.values()):
        missing = ", ".join(name for name, picked in grouping.items() if not picked)
        st.info(f"Pick ImageNet classes for {missing} too" + ("." if built_in else
                f", or clear every class to let level {level.key} find them from your training photos."))
        return None, False
    return grouping, True


def _found_grouping_ui(level: Level) -> bool:
    """What the newest model of this level found from its training photos, if it found its groups."""
    built = latest_models().get(level.key)
    found = built.card.found_grouping if built is not None else None
    if found is None:
        return False
    try:
        names = class_names(download=False)
    except ConfigError:
        names = None
    held_out = ("" if found.held_out_accuracy is None else
                f"; groups of that size scored {found.held_out_accuracy:.0%} on training photos they were not found from")
    lines = "\n".join(f"- **{name}**: {describe_group(group, names)}" for name, group in found.grouping.items())
    network = f" with {BACKBONES[built.card.backbone].label}" if built.card.backbone in BACKBONES else ""
    st.caption(f"Your level {level.key}{network} found its ImageNet classes from {found.photos} training photos, up to "
               f"{found.per_class} per class{held_out}. Building it again finds them again:\n{lines}")
    return True


@st.cache_data(show_spinner=False)
def _native_bfloat16() -> bool:
    from core.training.distribute import native_bfloat16

    return native_bfloat16()


def precision_ui(key) -> str:
    """A toggle for training in bfloat16, saying whether this machine has it in hardware."""
    native = _native_bfloat16()
    on = st.toggle("Compute in bfloat16", value=False, key=f"bf16_{key}",
                   help="Trains with bfloat16 arithmetic and float32 weights: measured 1.3x (Xception-like) to "
                        "1.8x (tutorial's convnet) faster on a CPU with AVX512-BF16. The saved model is float32. "
                        + ("This machine computes bfloat16 in hardware." if native else
                           "This machine has no bfloat16 hardware: it would be emulated, and slower."))
    return "bfloat16" if on else "float32"


def fine_tuning_ui(level: Level, backbone: str) -> dict:
    """How level 3 fine-tunes: on cached views (ours, fast) or on the fly (the tutorial's); returns the settings."""
    defaults = level.fine_tuning
    key = level.key
    way = st.radio("How", ["cached", "tutorial"], horizontal=True, key=f"way{key}",
                   format_func=lambda w: {"cached": "Cached views (fast)", "tutorial": "The tutorial's way"}[w])
    if way == "tutorial":
        st.caption(f"As the tutorial did: the whole network runs on a fresh augmentation of every photo in every "
                   f"epoch, and the last stage of the network is unfrozen ({defaults.epochs_on_the_fly} epochs "
                   "here; the tutorial ran 50, but fine-tuning is on its plateau long before).")
        return {"views": 0}
    sizes = BACKBONES[backbone].top_block_sizes
    default_size = TrainConfig(level=key, backbone=backbone).resolved().top_block  # this network's measured best
    c1, c2 = st.columns(2)
    views = c1.select_slider("Views per photo", [1, 2, 4, 8], value=defaults.views, key=f"views{key}",
                             help="The frozen layers run once on each photo, its mirror image and random draws of "
                                  "the augmentation; every epoch takes one of these views per photo.")
    top_block = c2.selectbox("Top block to unfreeze", sizes, key=f"top{key}-{backbone}",
                             index=sizes.index(default_size),
                             help="large: the network's last stage, about the tutorial's share; medium and small: "
                                  "its last few blocks. Less to train means faster epochs.")
    st.caption("Below the top block nothing changes during fine-tuning, so the same picture always gives the "
               f"same activations there: they are computed once for {views} view(s) of each photo and kept, and "
               "each epoch trains only the top block on them. The saved model is the same whole network. "
               "A second run with another seed or learning rate reuses them.")
    return {"views": int(views), "top_block": top_block}


def level_card_ui(level: Level, summary, busy: bool, running: jobs.Job | None = None):
    augment, preset_name = workspace.augment_settings()
    key = level.key
    with st.container(border=True):
        st.subheader(level.label)
        st.write(level.story)
        c1, c2, c3 = st.columns(3)
        backbone = None
        if level.needs_backbone:
            offered = [k for k, b in BACKBONES.items() if b.classifier or not level.uses_imagenet_classes]
            default = DEFAULT_BACKBONE
            if level.requires is not None:  # the backbone of the model it starts from (the quick start's is MobileNetV2)
                start = latest_models().get(level.requires)
                default = start.card.backbone if start is not None and start.card.backbone in offered else default
            backbone = c1.selectbox("Backbone", offered, index=offered.index(default),
                                    format_func=lambda k: BACKBONES[k].label, key=f"bb{key}")
        settings = dict(level=key, backbone=backbone, data_dir=str(summary.root))
        if level.archs:
            settings["arch"] = c1.selectbox(
                "Network", level.archs, key=f"arch{key}",
                format_func=lambda a: f"{a}: {SMALL_CONVNETS[a].image_size[0]}px, {SMALL_CONVNETS[a].gflops:.2f} GFLOP",
                help="; ".join(f"**{a}**: {SMALL_CONVNETS[a].description}" for a in level.archs))
        default_epochs, default_rate, way = level.epochs, level.learning_rate, ""
        if level.fine_tuning is not None:  # cached views or the tutorial's way; each keeps its own defaults below
            settings.update(fine_tuning_ui(level, backbone))
            resolved = TrainConfig(**settings).resolved()
            default_epochs, default_rate, way = resolved.epochs, resolved.learning_rate, f"-{settings['views']}"
        if level.trains:
            epochs = c2.number_input("Epochs", 1, 200, value=default_epochs, help=level.epochs_note,
                                     key=f"ep{key}{way}")
            batch = c3.select_slider("Batch size", [8, 16, 32, 64], value=16, key=f"bs{key}")
            rates = sorted({*LEARNING_RATES, default_rate})
            lr = c1.select_slider("Learning rate", rates, value=default_rate, format_func=lambda v: f"{v:g}",
                                  key=f"lr{key}{way}-{backbone}-{settings.get('top_block')}",  # each default its own
                                  help=f"{level.optimizer_label}, {level.schedule} schedule.")
            dropout = c2.slider("Dropout", 0.0, 0.8, 0.5, 0.05, key=f"do{key}")
            settings.update(epochs=int(epochs), batch_size=int(batch), learning_rate=float(lr), dropout=float(dropout))
        else:
            c2.caption("Nothing to train: no epochs, no learning rate. The network is used as it was trained on ImageNet.")
        if level.can_augment:
            use_aug = c3.toggle("Augmentation", value=True, key=f"aug{key}", help="Uses the Augmentation lab's settings.")
            label = PRESET_LABELS.get(preset_name, "custom settings")
            st.caption(f"Augmentation: {f'{label} ({augment.describe()})' if use_aug else 'off'} — change it in "
                       "the **Augmentation lab**.")
            settings["augment"] = augment if use_aug else preset("none")
        elif level.trains:
            c3.caption("No augmentation: features are computed once, which is what makes this level cheap.")
        blocked = None
        if level.uses_imagenet_classes:
            built = latest_models().get(key)
            outvoting = built.card.outvoting_groups() if built is not None else None
            if outvoting is not None:
                (large, most), (small, fewest) = outvoting
                network = f" ({BACKBONES[built.card.backbone].label})" if built.card.backbone in BACKBONES else ""
                st.info(f"Your level {key}{network} was built when each class added up its ImageNet classes' "
                        f"probabilities, so on photos the network was unsure of, {large} ({most} ImageNet classes) "
                        f"could outvote {small} ({fewest}). Start it again to score each class by the average "
                        "probability of its ImageNet classes instead: nothing is trained.", icon=":material/update:")
            settings["imagenet_classes"], complete = imagenet_classes_ui(level, summary)
            if not complete:
                blocked = "ImageNet classes missing"
        settings["flip_average"] = st.toggle(
            "Average each prediction with the mirror image", value=True, key=f"flip{key}",
            help="The saved model looks at each photo and its left-right mirror and averages the two answers: "
                 "steadier on borderline photos, at twice the prediction cost. Turn it off if mirroring can "
                 "change the class (left/right arrows, text).")
        if level.archs:
            settings["precision"] = precision_ui(key)
        config = TrainConfig(**settings)
        counts = summary.counts()
        n_train, n_val = sum(counts["train"].values()), sum(counts["validation"].values())
        guess = estimate(config, n_train, n_val, fingerprint=summary.fingerprint)
        st.caption(f":material/timer: Estimated time on this machine: **{format_duration(guess.seconds)}** "
                   f"({guess.detail}). {level.tutorial_note(summary.classes)}")
        if level.requires is not None:
            resolved = config.resolved()
            if ModelStore().start_for(level.requires, resolved.backbone, summary.classes, resolved.image_size,
                                    summary.root) is None:
                what = f" with {BACKBONES[backbone].label}" if backbone else ""
                blocked = (f"Train level {level.requires}{what} first: this level starts from its trained model.")
                st.info(blocked)
        if running is not None and key in running.levels:  # the progress card is at the top, out of view from here
            st.info(f":material/hourglass_top: Level {key} is training now: its progress is at the "
                    "[top of this page](#train), and in the sidebar.")
        start_button_ui(f"Start level {key}", config, f"start{key}", busy or blocked is not None, "was_active")


def main():
    page_header("Train", "Each level trains in a background process: reload the page, visit other pages, come back — "
                         "it keeps going. One job at a time.")
    summary, _, error = current_summary()
    job_ui()
    if summary is None:
        st.warning(f"No usable data set: {error} Choose one on the **Data** page.")
        return
    running = jobs.active_job()
    busy = running is not None
    if busy:
        st.caption("A job is running; the Start buttons are back when it ends.")
    for level in all_levels():
        level_card_ui(level, summary, busy, running)


ensure_app_shell()
main()
