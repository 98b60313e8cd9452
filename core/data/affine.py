"""The affine map behind every geometric augmentation, as plain arithmetic (no Keras, no NumPy needed).

`core.data.random_affine.RandomAffine` applies it to batches of Keras tensors in training; the
Augmentation lab's preview (`core.data.augment.preview_variants`) to floats, with Pillow.
"""


def affine_rows(cos, sin, shear, zoom_x, zoom_y, shift_x, shift_y, flip, height, width):
    """The affine map from output to input pixel indices, as its six coefficients (a00, a01, a02, a10, a11, a12).

    A = rotation @ shear @ zoom @ flip, about the image centre, then the shift. Plain arithmetic, so
    it takes floats, NumPy arrays or Keras tensors (`RandomAffine` calls it on a batch).
    """
    a00 = cos * zoom_x * flip
    a01 = (cos * shear - sin) * zoom_y
    a10 = sin * zoom_x * flip
    a11 = (sin * shear + cos) * zoom_y
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a02 = cx + shift_x - (a00 * cx + a01 * cy)
    a12 = cy + shift_y - (a10 * cx + a11 * cy)
    return a00, a01, a02, a10, a11, a12
