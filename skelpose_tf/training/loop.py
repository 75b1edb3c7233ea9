"""`train(config)`: data, model, optimiser, callbacks, resume, final evaluation (and export)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import keras
import tensorflow as tf

from skelpose_tf.data.augment import AugmentConfig
from skelpose_tf.data.pipeline import make_eval_dataset, make_train_dataset
from skelpose_tf.data.records import SkipReport
from skelpose_tf.inference import codec_for_model
from skelpose_tf.keypoints import get_keypoint_set
from skelpose_tf.models.pose_model import build_pose_model
from skelpose_tf.training import callbacks as cb
from skelpose_tf.training.config import TrainConfig
from skelpose_tf.training.distribution import make_strategy
from skelpose_tf.training.optimizers import FusedAdam
from skelpose_tf.training.schedules import WarmupSchedule
from skelpose_tf.training.trainer import PoseTrainer

BACKUP_DIR = "backup"


def resolve_precision(precision):
    """The dtype policy name for `precision` ("auto": mixed_float16 on a GPU, else float32)."""
    if precision == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return precision


class TrainingData:
    """The people of a run: training records, validation sources and picture crops.

    Attributes:
        train_records: `PersonRecord`s of the training set (empty when training from shards).
        train_input: what `make_train_dataset` reads: the records or a `TFRecordSource`.
        num_train: the number of training people.
        val_records: validation `PersonRecord`s with ground-truth boxes (for pictures).
        val_source: the validation `DataSource` with ground-truth boxes.
        det_source: the same with detector boxes (COCO format only), or None.
        report: the `SkipReport` of everything skipped or repaired while reading and loading
            the training data.
    """

    def __init__(self, config: TrainConfig, keypoint_set, out=sys.stdout):
        from skelpose_tf.data import coco, mpii
        from skelpose_tf.evaluate_lib import DataSource

        self.report = SkipReport()
        paths = _data_paths(config, out)
        dataset = "mpii" if config.dataset == "mpii" else "coco"
        self.val_source = DataSource(dataset, paths["val_ann"], paths["val_images"],
                                     head_boxes=config.val_head_boxes)
        self.det_source = None
        if dataset == "coco" and paths["det_boxes"]:
            self.det_source = dataclasses.replace(self.val_source,
                                                  det_boxes_json=paths["det_boxes"])
        if dataset == "mpii":
            read = lambda ann, images, report: mpii.read_mpii(  # noqa: E731
                ann, images, config.input_size, keypoint_set=keypoint_set, report=report)
        else:
            read = lambda ann, images, report: coco.read_coco_keypoints(  # noqa: E731
                ann, images, keypoint_set, config.input_size, report=report)
        if config.train_tfrecords:
            from skelpose_tf.data.tfrecords import TFRecordSource

            self.train_records = []
            self.train_input = TFRecordSource(config.train_tfrecords)
            self.num_train = int(self.train_input.meta["num_records"])
        else:
            self.train_records = read(paths["train_ann"], paths["train_images"], self.report)
            self.train_input = self.train_records
            self.num_train = len(self.train_records)
        self.val_records = read(paths["val_ann"], paths["val_images"], SkipReport())
        if not self.num_train:
            raise ValueError(f"No usable training people in "
                             f"{config.train_tfrecords or paths['train_ann']}: "
                             f"{self.report.summary()}")
        print(f"data: {self.num_train} training people, {len(self.val_records)} "
              f"validation people ({config.dataset})", file=out, flush=True)


def _data_paths(config, out):
    if config.dataset != "synthetic":
        return {"train_ann": config.train_ann, "train_images": config.train_images,
                "val_ann": config.val_ann, "val_images": config.val_images,
                "det_boxes": config.val_det_boxes}
    from skelpose_tf.data.synthetic import dataset_paths, generate_dataset

    paths = dataset_paths(config.data_dir)
    if not paths.exists():
        print(f"data: generating the synthetic data set in {config.data_dir} "
              f"({config.synthetic_train} + {config.synthetic_val} images)", file=out, flush=True)
        generate_dataset(config.data_dir, config.synthetic_train, config.synthetic_val, seed=0)
    return {"train_ann": paths.train_annotations, "train_images": paths.train_images,
            "val_ann": paths.val_annotations, "val_images": paths.val_images,
            "det_boxes": config.val_det_boxes or paths.val_detections}


def evaluate(network, source, config: TrainConfig, out_dir, max_people=0, log_every=0):
    """The real evaluator (`skelpose_tf.evaluate_lib`) with the run's decoder and flip test."""
    from skelpose_tf.evaluate_lib import evaluate_model

    return evaluate_model(network, source, decoders=[config.decoder], flip_test=config.flip_test,
                          batch_size=config.batch_size, out_dir=out_dir,
                          max_people=max_people, log_every=log_every)[config.decoder]


def headline_metrics(evaluation):
    """Numbers of an `Evaluation`: COCO's 10 stats, or MPII's PCKh@0.5 / @0.1 means."""
    if evaluation.dataset == "mpii":
        return {"PCKh": evaluation.metric.mean, "PCKh@0.1": evaluation.metric.mean_at_0_1}
    return dict(evaluation.metric.stats)


def make_optimizer(config: TrainConfig, steps_per_epoch, global_batch, policy):
    """Adam (fused kernel; AdamW-style decay when `weight_decay`) on the run's schedule;
    loss-scaled for fp16."""
    lr = config.lr * (global_batch / config.base_batch_size if config.scale_lr else 1.0)
    schedule = WarmupSchedule(
        lr, total_steps=config.epochs * steps_per_epoch, decay=config.lr_decay,
        boundaries=[int(e * steps_per_epoch) for e in config.lr_steps], factor=config.lr_factor,
        warmup_steps=config.warmup_steps)
    optimizer = FusedAdam(schedule, weight_decay=config.weight_decay or None)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer, lr


def build_trainer(config: TrainConfig, keypoint_set, steps_per_epoch, global_batch, policy, out):
    """Network (with backbone weights), codec, compiled `PoseTrainer`, and the effective lr.

    Call inside the strategy's scope.
    """
    topology = {}
    if config.tiny_topology:
        topology = dict(stage_modules=(1, 1, 1), blocks_per_branch=1)
    network = build_pose_model(config.width, config.input_size, keypoint_set,
                               config.skeletal_attention, dtype=policy, **topology)
    if config.backbone_weights:
        if not os.path.exists(config.backbone_weights):
            raise FileNotFoundError(
                f"--backbone_weights={config.backbone_weights} does not exist. Convert a "
                "published checkpoint first (README, 'Published HRNet weights') or pass "
                "--backbone_weights=none to start from random initialisation.")
        from skelpose_tf.convert_weights import load_backbone_weights

        print(load_backbone_weights(network, config.backbone_weights), file=out, flush=True)
    codec = codec_for_model(network, decoder=config.decoder, sigma=config.sigma or None)
    multi_worker = config.strategy == "multi_worker"
    trainer = PoseTrainer(network, codec, config.skeletal_loss_weight, vector_logs=multi_worker,
                          micro_batches=config.micro_batches)
    optimizer, lr = make_optimizer(config, steps_per_epoch, global_batch, policy)
    trainer.compile(optimizer=optimizer, jit_compile=config.jit_compile)
    if multi_worker:
        # Keras 3.15 reduces a PerReplica first batch eagerly in its symbolic build and fails
        # (tf-keras-notes.md 5b); everything that build would create exists already.
        trainer._maybe_symbolic_build = lambda *args, **kwargs: None
    return network, codec, trainer, lr


def train(config: TrainConfig, out=sys.stdout):
    """Train (or resume) a run; returns the summary dict also written to `summary.json`."""
    started = time.time()
    os.makedirs(config.run_dir, exist_ok=True)
    strategy = make_strategy(config.strategy, config.cpu_replicas)
    policy = resolve_precision(config.precision)
    keypoint_set = get_keypoint_set(config.keypoint_set)
    data = TrainingData(config, keypoint_set, out)
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    steps_per_epoch = config.steps_per_epoch or max(1, data.num_train // global_batch)
    monitor = "PCKh" if config.dataset == "mpii" else "AP"

    with strategy.scope():
        network, codec, trainer, lr = build_trainer(config, keypoint_set, steps_per_epoch,
                                                    global_batch, policy, out)

    backup_dir = os.path.join(config.run_dir, BACKUP_DIR)
    state = cb.load_backup(trainer, backup_dir) or {}
    start_step = int(state.get("step", 0))
    print(f"run: {config.run_dir} | {network.name} {config.input_size[0]}x{config.input_size[1]}"
          f" skeletal attention {'on' if config.skeletal_attention else 'off'} | {policy} | "
          f"strategy {config.strategy} ({replicas} replicas) | global batch {global_batch}, "
          f"lr {lr:g}, {steps_per_epoch} steps/epoch x {config.epochs} epochs"
          + (f" | resuming at step {start_step}" if start_step else ""), file=out, flush=True)

    train_dataset = make_train_dataset(
        data.train_input, keypoint_set, config.input_size, global_batch,
        AugmentConfig(scale_factor=config.scale_factor, rotation_factor=config.rotation_factor,
                      flip_prob=config.flip_prob, half_body_prob=config.half_body_prob),
        seed=config.seed + start_step, report=data.report)
    if config.strategy == "multi_worker":
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_dataset = train_dataset.with_options(options)

    val_images = next(iter(make_eval_dataset(data.val_records[:4], keypoint_set,
                                             config.input_size, 4)))[0]
    callbacks = [
        cb.NanGuard(),
        cb.ValidationCallback(
            lambda net: headline_metrics(evaluate(
                net, data.val_source, config, os.path.join(config.run_dir, "validation"),
                max_people=config.val_max_people)),
            config.run_dir, config.val_every_epochs, config.epochs, state, monitor=monitor),
        cb.ImageLogger(os.path.join(config.run_dir, "tensorboard"), val_images, codec,
                       config.image_every_epochs, png_dir=os.path.join(config.run_dir, "pictures")),
        keras.callbacks.TensorBoard(os.path.join(config.run_dir, "tensorboard")),
        cb.StepBackup(backup_dir, config.backup_every_steps, state),
        keras.callbacks.CSVLogger(os.path.join(config.run_dir, "history.csv"), append=True),
    ]
    epoch, done_in_epoch = divmod(start_step, steps_per_epoch)
    if epoch < config.epochs and done_in_epoch:
        trainer.fit(train_dataset, initial_epoch=epoch, epochs=epoch + 1,
                    steps_per_epoch=steps_per_epoch - done_in_epoch, callbacks=callbacks,
                    verbose=config.verbose, shuffle=False)
        epoch += 1
    if epoch < config.epochs:
        trainer.fit(train_dataset, initial_epoch=epoch, epochs=config.epochs,
                    steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=config.verbose,
                    shuffle=False)
    train_seconds = time.time() - started
    evaluations = final_evaluation(config, data, network, out)
    summary = {f"{monitor} ({source.replace('_', ' ')})": result[monitor]
               for source, result in evaluations.items()}
    summary.update(evaluations)
    if config.export:
        summary["export"] = export_best(config, data, out)
    summary.update(run_dir=config.run_dir, steps=int(trainer.optimizer.iterations.numpy()),
                   train_seconds=round(train_seconds, 1), skipped=data.report.summary(),
                   best_epoch=state.get("best_epoch"), total_seconds=round(time.time() - started, 1))
    with open(os.path.join(config.run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary


def export_best(config, data, out, num_calibration=200, num_verification=64):
    """Export the best checkpoint (SavedModel + TFLite), verify it, and compare COCO AP.

    int8 calibration crops come from the training set, verification crops from the validation
    set (real crops through the evaluation pipeline). Raises `ExportVerificationError` when an
    artifact is past its tolerance. Returns a summary dict.
    """
    from skelpose_tf import export

    network = keras.saving.load_model(os.path.join(config.run_dir, "best.keras"), safe_mode=True)
    export_dir = os.path.join(config.run_dir, "export")
    print(f"export: writing and verifying the SavedModel and TFLite models in {export_dir}",
          file=out, flush=True)
    keypoint_set, size = network.keypoint_set, network.input_size
    report = export.export_all(
        network, export_dir,
        export.crops_from_records(data.train_records or data.val_records, keypoint_set, size,
                                  num_calibration),
        export.crops_from_records(data.val_records, keypoint_set, size, num_verification),
        quantizations=config.export_quantizations, flip_test=config.flip_test,
        decoder=config.decoder, out=out)
    result = {"dir": export_dir, "passed": report.passed}
    if data.val_source.dataset == "coco":
        result["AP"] = export.compare_ap(network, report, data.val_source.annotation_file,
                                         data.val_source.image_dir, out=out)
    return result


def final_evaluation(config, data, network, out):
    """Evaluate the best checkpoint on the whole validation set (both box sources if known)."""
    best_path = os.path.join(config.run_dir, "best.keras")
    if os.path.exists(best_path):
        network = keras.saving.load_model(best_path, safe_mode=True)
    summary = {}
    for name, source in (("ground_truth_boxes", data.val_source),
                         ("detector_boxes", data.det_source)):
        if source is None:
            continue
        evaluation = evaluate(network, source, config, os.path.join(config.run_dir, "eval", name),
                              log_every=20)
        print(evaluation.format_table(f"{config.run_dir} validation", network.name), file=out,
              flush=True)
        summary[name] = {**headline_metrics(evaluation), "box_source": evaluation.box_source,
                         "files": evaluation.files}
    return summary
