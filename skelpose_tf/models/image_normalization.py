"""In-graph input normalisation, so every caller feeds raw RGB pixels."""

from __future__ import annotations

import keras
from keras import ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="skelpose_tf")
class ImageNormalization(keras.layers.Layer):
    """Maps raw RGB pixels in [0, 255] (uint8 or float) to `(x / 255 - mean) / std`.

    The arithmetic runs in float32 whatever the dtype policy; the result is cast to the layer's
    compute dtype (bfloat16 or float16 under mixed precision).

    Args:
        mean: per-channel mean in [0, 1] units (ImageNet by default).
        std: per-channel standard deviation in [0, 1] units.
        **kwargs: standard layer arguments.

    Call arguments:
        images: `[B, H, W, 3]` RGB, uint8 or float, values in [0, 255].

    Returns:
        `[B, H, W, 3]` normalised images in the compute dtype.

    Example:
    ```python
    normalise = ImageNormalization()
    normalise(np.full((1, 2, 2, 3), 255, np.uint8))  # (1 - 0.485) / 0.229 = 2.2489 in channel 0
    ```
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs):
        super().__init__(**kwargs)
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length. Received: {mean}, {std}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive. Received: std={std}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._autocast = False

    def call(self, images):
        x = ops.cast(images, "float32")
        scale = ops.convert_to_tensor([1.0 / (255.0 * s) for s in self.std], "float32")
        offset = ops.convert_to_tensor([m / s for m, s in zip(self.mean, self.std)], "float32")
        return ops.cast(x * scale - offset, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std))
        return config
