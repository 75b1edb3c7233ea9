"""skelpose_tf: top-down human pose estimation with skeletal heatmaps (Keras 3, TensorFlow).

The heavy entry points are imported lazily so that light modules (keypoint metadata, the
synthetic data generator) start without loading TensorFlow.
"""

from skelpose_tf.keypoints import COCO, MPII, KeypointSet, SkeletalLink, get_keypoint_set

__version__ = "0.1.0"

_LAZY = {
    "build_pose_model": "skelpose_tf.models.pose_model",
    "PoseHRNet": "skelpose_tf.models.pose_model",
    "PoseEstimator": "skelpose_tf.estimator",
    "PersonPose": "skelpose_tf.person_pose",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skelpose_tf' has no attribute {name!r}")


__all__ = ["COCO", "MPII", "KeypointSet", "SkeletalLink", "get_keypoint_set", *_LAZY]
