"""Tiny pose networks for fast tests: width 8 and one module / one block per stage.

The structure (branches, fuse layers, skeletal module, heads) is the official one; only the
repetition counts are cut, which shrinks the graph (and its tracing time) about tenfold.
"""

from skelpose_tf.models.pose_model import build_pose_model

TINY_TOPOLOGY = dict(stage_modules=(1, 1, 1), blocks_per_branch=1)


def tiny_pose_model(keypoint_set="coco", skeletal_attention=True, input_size=(64, 64), width=8,
                    **kwargs):
    return build_pose_model(width, input_size, keypoint_set, skeletal_attention,
                            **TINY_TOPOLOGY, **kwargs)
