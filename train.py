"""Train a skeletal-heatmap pose model.

    python train.py --flagfile=configs/demo.cfg                  # synthetic data, CPU, minutes
    python train.py --flagfile=configs/coco_w32.cfg --train_ann=... --batch_size=16

Flags given after `--flagfile` override the file. The run's own flags (this file's, not
those TensorFlow defines) are written to `<run_dir>/flags.cfg`; rerunning the same command, or
`python train.py --flagfile=<run_dir>/flags.cfg`, resumes the run from its newest intact
checkpoint. `--restart` moves an existing run directory aside and starts over.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from skelpose_tf.training.config import DATASETS, PRECISIONS, STRATEGIES  # noqa: E402

_RUN_DIR = flags.DEFINE_string("run_dir", "runs/coco_w32_256x192", "Output directory of the run.")
_DATASET = flags.DEFINE_enum("dataset", "coco", DATASETS, "Data set layout.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data/synthetic", "Synthetic data directory.")
_SYN_TRAIN = flags.DEFINE_integer("synthetic_train", 2000, "Synthetic training images to generate.")
_SYN_VAL = flags.DEFINE_integer("synthetic_val", 200, "Synthetic validation images to generate.")
_TRAIN_ANN = flags.DEFINE_string("train_ann", "", "Training annotations (COCO JSON / MPII JSON).")
_TRAIN_IMAGES = flags.DEFINE_string("train_images", "", "Training image folder.")
_TRAIN_TFRECORDS = flags.DEFINE_string("train_tfrecords", "", "Train from these TFRecord shards "
                                       "(python -m skelpose_tf.data.tfrecords) instead.")
_VAL_ANN = flags.DEFINE_string("val_ann", "", "Validation annotations.")
_VAL_IMAGES = flags.DEFINE_string("val_images", "", "Validation image folder.")
_DET_BOXES = flags.DEFINE_string("val_det_boxes", "", "Detector person boxes for the final COCO "
                                 "evaluation (COCO_val2017_detections_AP_H_56_person.json).")
_HEAD_BOXES = flags.DEFINE_string("val_head_boxes", "", "MPII gt_valid.mat-style head boxes.")
_KEYPOINT_SET = flags.DEFINE_string("keypoint_set", "coco", "coco, mpii or a JSON file.")
_WIDTH = flags.DEFINE_integer("width", 32, "HRNet width (32, 48, or small for CPU work).")
_INPUT_SIZE = flags.DEFINE_string("input_size", "256x192", "Input height x width.")
_SKELETAL = flags.DEFINE_bool("skeletal_attention", True, "Off: the HRNet baseline.")
_TINY = flags.DEFINE_bool("tiny_topology", False, "One module and one block per stage (quick "
                          "CPU runs and tests; the official depth when false).")
_SIGMA = flags.DEFINE_float("sigma", 0.0, "Keypoint Gaussian sigma in heatmap pixels "
                            "(0: 2, or 3 from 384-pixel-high inputs, as HRNet).")
_LAMBDA = flags.DEFINE_float("skeletal_loss_weight", 0.2, "lambda in l = l_k + lambda l_s.")
_BACKBONE = flags.DEFINE_string("backbone_weights", "", "Initial weights: a published HRNet .pth "
                                "or a converted .weights.h5 ('' or 'none': random init).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size per replica.")
_MICRO = flags.DEFINE_integer("micro_batches", 1, "Run each batch as this many sequential "
                              "micro-batches (gradient accumulation; less activation memory).")
_EPOCHS = flags.DEFINE_integer("epochs", 210, "Epochs.")
_STEPS = flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch (0: one pass over the data).")
_LR = flags.DEFINE_float("lr", 1e-3, "Base learning rate (Adam).")
_LR_DECAY = flags.DEFINE_enum("lr_decay", "step", ["step", "cosine"], "Learning-rate decay.")
_LR_STEPS = flags.DEFINE_list("lr_steps", ["170", "200"], "Epochs where the step decay applies.")
_LR_FACTOR = flags.DEFINE_float("lr_factor", 0.1, "Step decay factor.")
_WARMUP = flags.DEFINE_integer("warmup_steps", 0, "Linear warm-up steps.")
_SCALE_LR = flags.DEFINE_bool("scale_lr", False, "Linear scaling: lr x global_batch / base_batch.")
_BASE_BATCH = flags.DEFINE_integer("base_batch_size", 128, "Batch size the base lr was tuned for.")
_WD = flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (official HRNet: 0, the "
                         "paper states 1e-4).")
_ROT = flags.DEFINE_float("rotation_factor", 45.0, "Rotation range in degrees (p 0.6).")
_SCALE = flags.DEFINE_float("scale_factor", 0.35, "Scale augmentation range.")
_FLIP = flags.DEFINE_float("flip_prob", 0.5, "Horizontal flip probability.")
_HALF = flags.DEFINE_float("half_body_prob", 0.3, "Half-body augmentation probability.")
_PRECISION = flags.DEFINE_enum("mixed_precision", "auto", PRECISIONS,
                               "Dtype policy (auto: mixed_float16 on GPU, else float32).")
_JIT = flags.DEFINE_bool("jit_compile", False, "XLA for the training step (slower on CPU).")
_STRATEGY = flags.DEFINE_enum("strategy", "default", STRATEGIES, "tf.distribute strategy.")
_CPU_REPLICAS = flags.DEFINE_integer("cpu_replicas", 0, "Logical CPU devices for 'mirrored' "
                                     "without GPUs (testing).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the initial weights, data order and "
                             "augmentation.")
_DETERMINISTIC = flags.DEFINE_bool("deterministic_data", False, "Batches in a fixed order "
                                   "(bit-reproducible runs; slightly slower input).")
_BACKUP = flags.DEFINE_integer("backup_every_steps", 200, "Checkpoint interval in optimizer "
                               "steps (resume granularity).")
_RESTART = flags.DEFINE_bool("restart", False, "Move an existing run directory aside "
                             "(<run_dir>.replaced-<time>) and start from step 0 instead of "
                             "resuming. Never written to flags.cfg.")
_VAL_EVERY = flags.DEFINE_integer("val_every_epochs", 10, "Validation interval in epochs.")
_VAL_MAX = flags.DEFINE_integer("val_max_people", 0, "Validation subset size (0: all).")
_IMAGE_EVERY = flags.DEFINE_integer("image_every_epochs", 1, "Picture logging interval.")
_DECODER = flags.DEFINE_enum("decoder", "weighted", ["weighted", "argmax", "quarter", "dark"],
                             "Heatmap decoder for evaluation.")
_FLIP_TEST = flags.DEFINE_bool("flip_test", True, "Flip test at evaluation.")
_EXPORT = flags.DEFINE_bool("export", False, "Export SavedModel + TFLite after training.")
_QUANT = flags.DEFINE_list("export_quantizations", ["float32", "float16", "dynamic_int8", "int8"],
                           "TFLite variants to export.")
_VERBOSE = flags.DEFINE_integer("verbose", 1, "Keras verbosity (1: progress bar, 2: one line "
                                "per epoch).")


def build_config():
    from skelpose_tf.models.pose_model import parse_input_size
    from skelpose_tf.training.config import TrainConfig

    return TrainConfig(
        run_dir=_RUN_DIR.value, dataset=_DATASET.value, data_dir=_DATA_DIR.value,
        synthetic_train=_SYN_TRAIN.value, synthetic_val=_SYN_VAL.value,
        train_ann=_TRAIN_ANN.value, train_images=_TRAIN_IMAGES.value,
        train_tfrecords=_TRAIN_TFRECORDS.value, val_ann=_VAL_ANN.value,
        val_images=_VAL_IMAGES.value, val_det_boxes=_DET_BOXES.value,
        val_head_boxes=_HEAD_BOXES.value, keypoint_set=_KEYPOINT_SET.value, width=_WIDTH.value,
        input_size=parse_input_size(_INPUT_SIZE.value), skeletal_attention=_SKELETAL.value,
        tiny_topology=_TINY.value,
        sigma=_SIGMA.value, skeletal_loss_weight=_LAMBDA.value,
        backbone_weights="" if _BACKBONE.value.lower() == "none" else _BACKBONE.value,
        batch_size=_BATCH.value, micro_batches=_MICRO.value, epochs=_EPOCHS.value,
        steps_per_epoch=_STEPS.value,
        lr=_LR.value, lr_decay=_LR_DECAY.value, lr_steps=tuple(float(e) for e in _LR_STEPS.value),
        lr_factor=_LR_FACTOR.value, warmup_steps=_WARMUP.value, scale_lr=_SCALE_LR.value,
        base_batch_size=_BASE_BATCH.value, weight_decay=_WD.value,
        rotation_factor=_ROT.value, scale_factor=_SCALE.value, flip_prob=_FLIP.value,
        half_body_prob=_HALF.value, precision=_PRECISION.value, jit_compile=_JIT.value,
        strategy=_STRATEGY.value, cpu_replicas=_CPU_REPLICAS.value, seed=_SEED.value,
        deterministic_data=_DETERMINISTIC.value,
        backup_every_steps=_BACKUP.value, val_every_epochs=_VAL_EVERY.value,
        val_max_people=_VAL_MAX.value, image_every_epochs=_IMAGE_EVERY.value,
        decoder=_DECODER.value, flip_test=_FLIP_TEST.value, export=_EXPORT.value,
        export_quantizations=tuple(_QUANT.value), verbose=_VERBOSE.value)


def run_flags_text() -> str:
    """This script's flags as `--name=value` lines: not the ones TensorFlow's imports define
    (a later `--flagfile` would refuse them), not `--restart` (it must not repeat)."""
    names = sorted(holder.name for holder in globals().values()
                   if isinstance(holder, flags.FlagHolder) and holder.name != _RESTART.name)
    return ("# python train.py --flagfile=<this file> resumes or reproduces the run.\n"
            + "".join(flags.FLAGS[name].serialize() + "\n" for name in names))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]} (flags are --name=value).")
    logging.set_verbosity(logging.WARNING)
    try:
        config = build_config()
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    from skelpose_tf.training.loop import train
    from skelpose_tf.training.run_state import RunStateError

    import tensorflow as tf

    try:
        summary = train(config, restart=_RESTART.value, flags_text=run_flags_text())
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.AbortedError) as error:
        if config.strategy != "multi_worker":
            raise
        cause = " ".join(str(error.message).split())[:300]
        sys.exit(f"train.py: error: lost contact with another worker ({type(error).__name__}: "
                 f"{cause}). Every worker stops. When all machines are back, rerun the same "
                 f"command on every worker: the run resumes from its last checkpoint in "
                 f"{config.run_dir}/checkpoints.")
    except (ValueError, FileNotFoundError, FloatingPointError, RunStateError) as error:
        # Bad data, paths or a diverged run: a clear message, no traceback (checkpoints are kept).
        sys.exit(f"train.py: error: {error}")
    print("\nsummary:", json.dumps(
        {k: v for k, v in summary.items() if k not in ("ground_truth_boxes", "detector_boxes")},
        indent=2, default=str))


if __name__ == "__main__":
    app.run(main)
