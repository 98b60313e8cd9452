"""Photos and data sets: folders and their summaries, download, safe unzip, the decode cache,
image loading, the in-app data-set builder, and augmentation with its affine maths.

Depends only on the base modules (`core.settings`, `core.errors`, `core.atomic_files`).
"""
