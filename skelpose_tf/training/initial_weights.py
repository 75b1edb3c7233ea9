"""Initial weights drawn per variable name, so that two architectures share their common layers.

Keras initialisers without a seed take theirs from one stream (Python's `random`, seeded by
`keras.utils.set_random_seed`) in the order the layers are built. The skeletal attention module
is built after stage 3, so with one seed the plain HRNet and the model with the module got
different stage-4 and head weights: an ablation compared two initialisations, not two
architectures. `seed_initial_weights` redraws every randomly initialised variable from a seed
of (run seed, layer name, variable), so a layer's initial values depend on its name only.

Example:
    network = build_pose_model(16, (128, 96), skeletal_attention=False)
    seed_initial_weights(network, seed=3)   # stage weights equal the skeletal model's at seed 3
"""

from __future__ import annotations

import zlib

import keras

_SUFFIX = "_initializer"


def variable_seed(seed: int, layer_name: str, variable_name: str) -> int:
    """A 31-bit seed from (run seed, layer name, variable name): CRC-32 of their text."""
    return zlib.crc32(f"{int(seed)}/{layer_name}/{variable_name}".encode()) & 0x7FFFFFFF


def seeded_variables(network) -> list:
    """(layer, variable name, variable, initializer) of every variable whose layer keeps a
    seedable initializer (`<name>_initializer` with a `seed` in its config) next to it."""
    found = []
    for layer in network.layers:
        for attribute, initializer in sorted(vars(layer).items()):
            if not (attribute.endswith(_SUFFIX)
                    and isinstance(initializer, keras.initializers.Initializer)
                    and "seed" in initializer.get_config()):
                continue
            name = attribute[:-len(_SUFFIX)]
            variable = getattr(layer, name, None)
            if isinstance(variable, keras.Variable):
                found.append((layer, name, variable, initializer))
    return found


def seed_initial_weights(network, seed: int) -> int:
    """Redraw each randomly initialised variable of `network` from `variable_seed`.

    Constant initialisers (BatchNorm's ones and zeros, biases) are left as they are. Call it
    right after building, before loading any pretrained weights.

    Args:
        network: a built Keras model (its top-level layers are visited).
        seed: the run's seed.

    Returns:
        The number of variables redrawn.
    """
    redrawn = seeded_variables(network)
    for layer, name, variable, initializer in redrawn:
        config = {**initializer.get_config(), "seed": variable_seed(seed, layer.name, name)}
        seeded = type(initializer).from_config(config)
        variable.assign(seeded(tuple(variable.shape), dtype=variable.dtype))
    return len(redrawn)
