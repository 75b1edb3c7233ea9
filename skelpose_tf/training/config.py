"""`TrainConfig`: every setting of a training run, frozen; `train.py` derives its flags from it.

Each field is declared with `_setting(default, help, choices)`: its name is the `--flag` name,
its default the flag default, its help the flag help, and `choices` (for closed sets) both the
`DEFINE_enum` values and what `__post_init__` accepts. A new setting is one field here.
"""

from __future__ import annotations

import dataclasses

from skelpose_tf.codec import DECODERS

DATASETS = ("synthetic", "coco", "mpii")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
LR_DECAYS = ("step", "cosine")


def _setting(default, help_text, choices=None):
    """A `TrainConfig` field with its flag help text and, for a closed set, its allowed values."""
    metadata = {"help": help_text}
    if choices is not None:
        metadata["choices"] = choices
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (defaults: the official HRNet COCO W32 recipe,
    docs/design.md section 5).

    Field names are `train.py`'s flag names; each field's meaning is its `help` metadata
    (`python train.py --helpshort` prints them all). `input_size` is `(height, width)` here and
    `HxW` text on the command line; `lr_steps` and `export_quantizations` are tuples here and
    comma-separated lists there; `backbone_weights=none` on the command line is `""` here.
    """

    # Data.
    run_dir: str = _setting("runs/coco_w32_256x192", "Output directory of the run.")
    dataset: str = _setting("coco", "Data set layout: synthetic (COCO format, generated into "
                            "data_dir when missing), coco or mpii.", DATASETS)
    data_dir: str = _setting("data/synthetic", "Synthetic data directory.")
    synthetic_train: int = _setting(2000, "Synthetic training images to generate when data_dir "
                                    "is missing.")
    synthetic_val: int = _setting(200, "Synthetic validation images to generate when data_dir "
                                  "is missing.")
    synthetic_same_sides: bool = _setting(False, "Synthetic people whose left and right limbs "
                                          "look alike (the generator's --same_sides); an "
                                          "existing data_dir must have been made the same way.")
    train_ann: str = _setting("", "Training annotations (COCO JSON / MPII HRNet-layout JSON).")
    train_tfrecords: str = _setting("", "Train from this directory of shards (python -m "
                                    "skelpose_tf.data.tfrecords) instead of train_ann / "
                                    "train_images: each image is decoded once for all its "
                                    "people, the faster input path.")
    train_images: str = _setting("", "Training image folder.")
    val_ann: str = _setting("", "Validation annotations.")
    val_images: str = _setting("", "Validation image folder.")
    val_det_boxes: str = _setting("", "Detector person boxes for the final COCO evaluation "
                                  "(COCO_val2017_detections_AP_H_56_person.json).")
    val_head_boxes: str = _setting("", "MPII gt_valid.mat-style head boxes (else the JSON "
                                   "headbox fields).")
    keypoint_set: str = _setting("coco", "coco, mpii or a JSON file.")
    # Model.
    width: int = _setting(32, "HRNet width (32, 48, or small for CPU work).")
    input_size: tuple = _setting((256, 192), "Input height x width (HxW on the command line).")
    skeletal_attention: bool = _setting(True, "The skeletal attention module (off: the HRNet "
                                        "baseline).")
    tiny_topology: bool = _setting(False, "One module and one block per stage: the official "
                                   "structure at a fraction of the depth, for quick CPU runs "
                                   "and tests (false: the official depth).")
    sigma: float = _setting(0.0, "Keypoint Gaussian sigma in heatmap pixels (0: 2, or 3 from "
                            "384-pixel-high inputs, as HRNet).")
    skeletal_loss_weight: float = _setting(0.2, "lambda in l = l_k + lambda l_s.")
    backbone_weights: str = _setting("", "Initial weights: a published HRNet .pth or a converted "
                                     ".weights.h5 ('' or 'none': random init).")
    # Optimisation.
    batch_size: int = _setting(32, "Batch size per replica.")
    micro_batches: int = _setting(1, "Run each batch as this many sequential micro-batches "
                                  "(gradient accumulation; batch_size / micro_batches "
                                  "activation memory).")
    epochs: int = _setting(210, "Epochs.")
    steps_per_epoch: int = _setting(0, "Steps per epoch (0: one pass over the training people).")
    lr: float = _setting(1e-3, "Base learning rate (Adam).")
    lr_decay: str = _setting("step", "Learning-rate decay.", LR_DECAYS)
    lr_steps: tuple = _setting(
        (170.0, 200.0), "Epochs (MultiStepLR milestones) where the lr is multiplied by "
        "lr_factor; as in the official code, milestone m takes effect from 0-indexed epoch m-1.")
    lr_factor: float = _setting(0.1, "Step decay factor.")
    warmup_steps: int = _setting(0, "Linear warm-up steps.")
    scale_lr: bool = _setting(False, "Linear scaling: lr x global_batch / base_batch_size.")
    base_batch_size: int = _setting(128, "Batch size the base lr was tuned for.")
    weight_decay: float = _setting(0.0, "Decoupled (Keras AdamW-style) weight decay (official "
                                   "HRNet code: 0, it ignores its configured 1e-4; the paper "
                                   "states 1e-4).")
    # Augmentation.
    rotation_factor: float = _setting(45.0, "Rotation range in degrees (p 0.6).")
    scale_factor: float = _setting(0.35, "Scale augmentation range.")
    flip_prob: float = _setting(0.5, "Horizontal flip probability.")
    half_body_prob: float = _setting(0.3, "Half-body augmentation probability.")
    # Run.
    mixed_precision: str = _setting("auto", "Dtype policy (auto: mixed_float16 on GPU, else "
                                    "float32).", PRECISIONS)
    jit_compile: bool = _setting(False, "XLA for the training step (slower on CPU).")
    strategy: str = _setting("default", "tf.distribute strategy.", STRATEGIES)
    cpu_replicas: int = _setting(0, "Logical CPU devices for 'mirrored' without GPUs (testing).")
    seed: int = _setting(0, "Seed of the initial weights, data order and augmentation.")
    deterministic_data: bool = _setting(False, "Batches in a fixed order (bit-reproducible runs; "
                                        "slightly slower input).")
    backup_every_steps: int = _setting(200, "Checkpoint interval in optimizer steps (resume "
                                       "granularity).")
    val_every_epochs: int = _setting(10, "Validation interval in epochs.")
    val_max_people: int = _setting(0, "Validation subset size during training (0: all).")
    image_every_epochs: int = _setting(1, "Picture logging interval.")
    decoder: str = _setting("weighted", "Heatmap decoder for evaluation.", DECODERS)
    flip_test: bool = _setting(True, "Flip test at evaluation.")
    export: bool = _setting(False, "Export SavedModel + TFLite after training.")
    export_quantizations: tuple = _setting(("float32", "float16", "dynamic_int8", "int8"),
                                           "TFLite variants to export.")
    verbose: int = _setting(1, "Keras verbosity (1: progress bar, 2: one line per epoch).")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            if choices is not None and getattr(self, field.name) not in choices:
                raise ValueError(f"{field.name} must be one of {choices}. Received: "
                                 f"{field.name}={getattr(self, field.name)!r}")
        for name in ("batch_size", "micro_batches", "epochs", "backup_every_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive. Received: {name}={getattr(self, name)}")
        if self.batch_size % self.micro_batches:
            raise ValueError(f"micro_batches={self.micro_batches} must divide batch_size="
                             f"{self.batch_size}.")
        if self.dataset != "synthetic":
            needed = ("val_ann", "val_images") + (
                () if self.train_tfrecords else ("train_ann", "train_images"))
            missing = [name for name in needed if not getattr(self, name)]
            if missing:
                raise ValueError(
                    f"dataset={self.dataset!r} needs the paths --{', --'.join(missing)} "
                    "(see the README's data layout section).")
