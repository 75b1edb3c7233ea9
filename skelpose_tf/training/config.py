"""`TrainConfig`: every setting of a training run, frozen; `train.py` builds it from flags."""

from __future__ import annotations

import dataclasses

DATASETS = ("synthetic", "coco", "mpii")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (defaults: the official HRNet COCO W32 recipe, DESIGN.md 5).

    Data:
        dataset: "synthetic" (COCO format, generated into `data_dir` when missing), "coco" or
            "mpii".
        data_dir: synthetic data directory.
        synthetic_train, synthetic_val: number of images to generate when it is missing.
        train_ann, train_images, val_ann, val_images: COCO annotation files and image folders
            (for MPII: the HRNet-layout JSON files and the images folder).
        train_tfrecords: a directory of shards from `python -m skelpose_tf.data.tfrecords` to
            train from instead of `train_ann` / `train_images` (each image decoded once for all
            its people: the faster input path).
        val_det_boxes: optional detector box file for the final COCO evaluation.
        val_head_boxes: MPII `gt_valid.mat`-style head boxes (else the JSON `headbox` fields).
        keypoint_set: "coco", "mpii" or a JSON path.
    Model:
        width, input_size (h, w), skeletal_attention, tiny_topology (one module and one
        block per stage: the official structure at a fraction of the depth, for quick CPU
        runs and tests), sigma (0: official default for the size),
        skeletal_loss_weight (lambda), backbone_weights (a path or "" for none).
    Optimisation:
        batch_size per replica, micro_batches (gradient accumulation inside the step: each
        batch runs as this many sequential micro-batches, for batch_size / micro_batches
        activation memory), epochs, steps_per_epoch (0: one pass over the training people),
        lr, lr_decay ("step" or "cosine"), lr_steps (epochs), lr_factor, warmup_steps,
        scale_lr (linear scaling: lr * global_batch / base_batch_size), weight_decay
        (decoupled, Keras AdamW-style; 0 reproduces the official code, which ignores its 1e-4).
    Augmentation: rotation_factor, scale_factor, flip_prob, half_body_prob.
    Run: run_dir, precision, jit_compile, strategy, cpu_replicas, seed, deterministic_data
        (batches in a fixed order: reproducible to the bit, a little slower), backup_every_steps
        (checkpoint interval in optimizer steps),
        val_every_epochs, val_max_people (validation subset during training; 0 = all),
        image_every_epochs, decoder, flip_test, export (after training), export_quantizations,
        verbose.
    """

    run_dir: str = "runs/coco_w32_256x192"
    dataset: str = "coco"
    data_dir: str = "data/synthetic"
    synthetic_train: int = 2000
    synthetic_val: int = 200
    train_ann: str = ""
    train_tfrecords: str = ""
    train_images: str = ""
    val_ann: str = ""
    val_images: str = ""
    val_det_boxes: str = ""
    val_head_boxes: str = ""
    keypoint_set: str = "coco"
    width: int = 32
    input_size: tuple = (256, 192)
    skeletal_attention: bool = True
    tiny_topology: bool = False
    sigma: float = 0.0
    skeletal_loss_weight: float = 0.2
    backbone_weights: str = ""
    batch_size: int = 32
    micro_batches: int = 1
    epochs: int = 210
    steps_per_epoch: int = 0
    lr: float = 1e-3
    lr_decay: str = "step"
    lr_steps: tuple = (170, 200)
    lr_factor: float = 0.1
    warmup_steps: int = 0
    scale_lr: bool = False
    base_batch_size: int = 128
    weight_decay: float = 0.0
    rotation_factor: float = 45.0
    scale_factor: float = 0.35
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    precision: str = "auto"
    jit_compile: bool = False
    strategy: str = "default"
    cpu_replicas: int = 0
    seed: int = 0
    deterministic_data: bool = False
    backup_every_steps: int = 200
    val_every_epochs: int = 10
    val_max_people: int = 0
    image_every_epochs: int = 1
    decoder: str = "weighted"
    flip_test: bool = True
    export: bool = False
    export_quantizations: tuple = ("float32", "float16", "dynamic_int8", "int8")
    verbose: int = 1

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}. Received: dataset={self.dataset!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {PRECISIONS}. Received: precision={self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be one of {STRATEGIES}. Received: strategy={self.strategy!r}")
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
