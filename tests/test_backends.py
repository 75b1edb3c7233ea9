"""One model, three Keras backends: TensorFlow, JAX and PyTorch agree on the same weights.

`backend_step.py` runs in one subprocess per backend (Keras picks its backend at import) on the
same tiny-model weights and batch. They must give the same inference heatmaps, targets, decoded
keypoints, losses and gradients (float32 tolerance: the backends order their sums differently,
and TensorFlow's BatchNorm is the fused kernel where the others use `keras.ops`); the loss falls
over a few `PoseTrainer` steps on each; and a model trained on JAX loads into the TensorFlow
backend with the heatmaps it had on JAX.

Needs `jax` and `torch` (requirements-backends.txt); `.ci/run` runs these tests in their own
step after installing them. Without them the tests are skipped, and say why.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from pose_fixtures import REPO_ROOT, TESTS_DIR, he_initialised_tiny_model, tiny_batch
from skelpose_tf.codec import DECODERS
from skelpose_tf.model_loading import load_pose_model

BACKENDS = ("tensorflow", "jax", "torch")
MISSING = [name for name in ("jax", "torch") if importlib.util.find_spec(name) is None]
pytestmark = [pytest.mark.backends,
              pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed "
                                 "(pip install -r requirements-backends.txt)")]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{backend: (result arrays, output directory)} of backend_step.py on one set of weights."""
    root = tmp_path_factory.mktemp("backends")
    weights = str(root / "tiny.weights.h5")
    he_initialised_tiny_model().save_weights(weights)
    images, labels = tiny_batch(4)
    batch = str(root / "batch.npz")
    np.savez(batch, images=images, **labels)
    processes = {}
    for backend in BACKENDS:
        (root / backend).mkdir()
        environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
                       "PYTHONPATH": os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")])}
        processes[backend] = subprocess.Popen(
            [sys.executable, os.path.join(TESTS_DIR, "backend_step.py"), weights, batch,
             str(root / backend)], cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
    outputs = {}
    for backend, process in processes.items():
        output = process.communicate(timeout=600)[0]
        assert process.returncode == 0, f"{backend}:\n{output[-4000:]}"
        outputs[backend] = (dict(np.load(root / backend / "result.npz")), root / backend)
    return outputs


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_backends_agree_on_outputs_losses_and_gradients(results, backend):
    reference, _ = results["tensorflow"]
    other, _ = results[backend]
    for name in ("heatmaps", "skeletal_heatmaps"):
        scale = np.abs(reference[name]).max()
        np.testing.assert_allclose(other[name], reference[name], atol=1e-5 * scale, err_msg=name)
    for name in reference:
        if name.startswith("target_"):  # the codec alone: same maths, float32 rounding
            np.testing.assert_allclose(other[name], reference[name], atol=1e-6, err_msg=name)
    for method in DECODERS:
        name = f"decoded_{method}"
        np.testing.assert_allclose(other[name][..., :2], reference[name][..., :2], atol=1e-3,
                                   err_msg=name)
    np.testing.assert_allclose(other["losses"], reference["losses"], rtol=1e-5)
    assert list(other["gradient_names"]) == list(reference["gradient_names"])
    # Gradients: TensorFlow's fused BatchNorm and oneDNN convolutions round differently from
    # the keras.ops BatchNorm of JAX and PyTorch (which agree with each other to ~1e-7), and a
    # channel whose batch variance is near zero amplifies that rounding (1 / sqrt(variance)) in
    # a few elements. So each gradient is compared as a whole: the norm of the difference
    # against the norm of the gradient (a wrong term would be off by order 1).
    for index, path in enumerate(reference["gradient_names"]):
        expected, actual = reference[f"gradient_{index}"], other[f"gradient_{index}"]
        error = np.linalg.norm(actual - expected) / (np.linalg.norm(expected) + 1e-12)
        assert error < 1e-3, f"{path}: relative gradient error {error:.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_loss_falls_on_every_backend(results, backend):
    history = results[backend][0]["history"]
    assert history[-1] < 0.8 * history[0], history
    # The first step's loss is computed before any update: the same on every backend.
    np.testing.assert_allclose(history[0], results["tensorflow"][0]["history"][0], rtol=1e-5)


def test_a_model_trained_on_jax_loads_into_tensorflow(results):
    arrays, directory = results["jax"]
    network, _ = load_pose_model(str(directory / "trained.keras"))
    images, _ = tiny_batch(4)
    heatmaps = network(images, training=False)["heatmaps"].numpy()
    np.testing.assert_allclose(heatmaps, arrays["trained_heatmaps"],
                               atol=1e-5 * np.abs(heatmaps).max())
