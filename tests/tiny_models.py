"""Tiny pose networks for fast tests: width 8 and one module / one block per stage.

The structure (branches, fuse layers, skeletal module, heads) is the official one; only the
repetition counts are cut, which shrinks the graph (and its tracing time) about tenfold.
"""

import keras
import numpy as np

from skelpose_tf.models.pose_model import TOPOLOGIES, build_pose_model


def tiny_pose_model(keypoint_set="coco", skeletal_attention=True, input_size=(64, 64), width=8,
                    **kwargs):
    return build_pose_model(width, input_size, keypoint_set, skeletal_attention,
                            **TOPOLOGIES["tiny"], **kwargs)


def he_initialised_tiny_model(input_size=(64, 64), dtype=None, seed=0, **kwargs):
    """A tiny COCO model whose convolutions are He-initialised (`he_initialise`)."""
    keras.utils.set_random_seed(seed)  # the layers' own initialisers too (skeletal module)
    network = tiny_pose_model("coco", input_size=input_size, dtype=dtype, **kwargs)
    return he_initialise(network, seed)


def he_initialise(network, seed=0):
    """Give every convolution of `network` He-initialised weights (in place); returns it.

    The official N(0, 0.001) initialisation makes untrained heatmaps ~1e-10 everywhere; He
    initialisation gives peaked, input-dependent heatmaps, so export and decoding comparisons
    between two runtimes test something.
    """
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if isinstance(layer, keras.layers.Conv2D):
            weights = layer.get_weights()
            fan_in = int(np.prod(weights[0].shape[:-1]))
            weights[0] = rng.normal(0.0, np.sqrt(2.0 / fan_in), weights[0].shape)
            layer.set_weights([w.astype(np.float32) for w in weights])
    return network
