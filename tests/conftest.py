"""Shared pytest setup: quiet TensorFlow logs, the `slow` marker, and the fixtures that several
test modules use.

Every fixture here is module-scoped: each test module that asks for one builds its own, as when
each module defined it. Helpers that are plain functions are in pose_fixtures.py and
data_fixtures.py.

Synthetic data sets (`skelpose_tf.data.synthetic`, seed 0), as their root directory:
- `synthetic_eval_dir`: 4 train and 3 val images of 320x240, for evaluate.py and ablation.py.
- `synthetic_train_dir`: 24 train and 6 val images of 160x120, for train.py runs.

The export tests' model and data (test_export_*.py):
- `network`: `he_initialised_tiny_model()` (seed 0, 64x64; test_inference.py has its own).
- `data`: the `DatasetPaths` of 3 train and 3 val images of 160x120.
- `crops`: up to 8 val crops of `data` (verification and comparison); `calibration`: up to 16
  train crops (int8 calibration).
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: full-size models or long runs; skipped by default")
    config.addinivalue_line("markers", "backends: TensorFlow, JAX and PyTorch backends agree "
                            "(needs requirements-backends.txt; its own step in .ci/run)")


@pytest.fixture(scope="module")
def synthetic_eval_dir(tmp_path_factory):
    from skelpose_tf.data.synthetic import generate_dataset

    root = str(tmp_path_factory.mktemp("synthetic"))
    generate_dataset(root, 4, 3, seed=0)
    return root


@pytest.fixture(scope="module")
def synthetic_train_dir(tmp_path_factory):
    from skelpose_tf.data.synthetic import generate_dataset

    root = str(tmp_path_factory.mktemp("synthetic"))
    generate_dataset(root, 24, 6, seed=0, image_size=(160, 120))
    return root


@pytest.fixture(scope="module")
def network():
    from pose_fixtures import he_initialised_tiny_model

    return he_initialised_tiny_model()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from skelpose_tf.data.synthetic import generate_dataset

    return generate_dataset(str(tmp_path_factory.mktemp("synthetic")), 3, 3, seed=0,
                            image_size=(160, 120))


@pytest.fixture(scope="module")
def crops(data):
    from pose_fixtures import TINY_INPUT_SIZE
    from skelpose_tf.export import dataset_crops
    from skelpose_tf.keypoints import COCO

    return dataset_crops(data.val_annotations, data.val_images, COCO, TINY_INPUT_SIZE, 8)


@pytest.fixture(scope="module")
def calibration(data):
    from pose_fixtures import TINY_INPUT_SIZE
    from skelpose_tf.export import dataset_crops
    from skelpose_tf.keypoints import COCO

    return dataset_crops(data.train_annotations, data.train_images, COCO, TINY_INPUT_SIZE, 16)
