"""`train(config)`: data, model, optimiser, callbacks, resume, final evaluation (and export)."""

from __future__ import annotations

import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from skelpose_tf.data.augment import AugmentConfig
from skelpose_tf.data.pipeline import make_eval_dataset, make_train_dataset
from skelpose_tf.data.records import SkipReport
from skelpose_tf.inference import PosePredictor, codec_for_model, coco_evaluate, run_inference
from skelpose_tf.keypoints import get_keypoint_set
from skelpose_tf.models.pose_model import build_pose_model
from skelpose_tf.training import callbacks as cb
from skelpose_tf.training.config import TrainConfig
from skelpose_tf.training.distribution import make_strategy
from skelpose_tf.training.schedules import WarmupSchedule
from skelpose_tf.training.trainer import PoseTrainer

BACKUP_DIR = "backup"


def resolve_precision(precision):
    """The dtype policy name for `precision` ("auto": mixed_float16 on a GPU, else float32)."""
    if precision == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return precision


class TrainingData:
    """Records of a run's training and validation sets, read once.

    Attributes:
        train_records, val_records: lists of `PersonRecord`s (validation: ground-truth boxes).
        val_ann: the COCO annotation file of the validation set ("" for MPII).
        det_boxes: detector box file for a second final evaluation ("" if none).
        report: the `SkipReport` of everything skipped or repaired while reading and loading.
    """

    def __init__(self, config: TrainConfig, keypoint_set, out=sys.stdout):
        from skelpose_tf.data import coco, mpii

        self.report = SkipReport()
        paths = _data_paths(config, out)
        self.val_ann = paths["val_ann"] if config.dataset != "mpii" else ""
        self.det_boxes = paths.get("det_boxes", "")
        self.val_image_dir = paths["val_images"]
        if config.dataset == "mpii":
            self.train_records = mpii.read_mpii(paths["train_ann"], paths["train_images"],
                                                config.input_size, keypoint_set=keypoint_set,
                                                report=self.report)
            self.val_records = mpii.read_mpii(paths["val_ann"], paths["val_images"],
                                              config.input_size, keypoint_set=keypoint_set,
                                              gt_mat_file=config.val_head_boxes or None,
                                              report=self.report)
        else:
            self.train_records = coco.read_coco_keypoints(
                paths["train_ann"], paths["train_images"], keypoint_set, config.input_size,
                report=self.report)
            self.val_records = coco.read_coco_keypoints(
                paths["val_ann"], paths["val_images"], keypoint_set, config.input_size,
                report=self.report)
        if not self.train_records:
            raise ValueError(f"No usable training people in {paths['train_ann']}: "
                             f"{self.report.summary()}")
        print(f"data: {len(self.train_records)} training people, {len(self.val_records)} "
              f"validation people ({config.dataset})", file=out, flush=True)


def _data_paths(config, out):
    if config.dataset != "synthetic":
        return {"train_ann": config.train_ann, "train_images": config.train_images,
                "val_ann": config.val_ann, "val_images": config.val_images,
                "det_boxes": config.val_det_boxes}
    from skelpose_tf.data.synthetic import dataset_paths, generate_dataset

    paths = dataset_paths(config.data_dir)
    if not os.path.exists(paths.val_annotations):
        print(f"data: generating the synthetic data set in {config.data_dir} "
              f"({config.synthetic_train} + {config.synthetic_val} images)", file=out, flush=True)
        generate_dataset(config.data_dir, config.synthetic_train, config.synthetic_val,
                         seed=config.seed)
    return {"train_ann": paths.train_annotations, "train_images": paths.train_images,
            "val_ann": paths.val_annotations, "val_images": paths.val_images,
            "det_boxes": config.val_det_boxes or paths.val_detections}


def validation_subset(records, max_people):
    """The records of the first images holding at least `max_people` people (0: all).

    Whole images are kept so that COCO evaluation restricted to their ids is fair.
    """
    if not max_people or len(records) <= max_people:
        return list(records)
    chosen_ids, subset = set(), []
    for record in records:
        if record.image_id not in chosen_ids and len(subset) >= max_people:
            break
        chosen_ids.add(record.image_id)
        subset.append(record)
    return subset


def evaluate_network(network, records, data: TrainingData, config: TrainConfig, out_dir,
                     box_source=None, decoders=None, image_ids=None, log_every=0):
    """Metrics of `network` on `records` with the real evaluator (COCO AP or MPII PCKh).

    `image_ids` restricts COCO evaluation to those images (a validation subset); None scores
    every annotated image (people without a box count as misses, as with detector boxes).

    Returns:
        Dict of metrics for the first decoder (`AP`, `AP .5`, ... or `PCKh`, ...), plus
        `box_source`; with several decoders, a dict per decoder under `by_decoder`.
    """
    from skelpose_tf.evaluation.coco_metric import GROUND_TRUTH_BOXES

    codec = codec_for_model(network, decoder=config.decoder, sigma=config.sigma or None)
    predictor = PosePredictor(network, codec, flip_test=config.flip_test)
    dataset = make_eval_dataset(records, network.keypoint_set, network.input_size,
                                config.batch_size, report=data.report)
    decoders = list(decoders or [config.decoder])
    predictions = run_inference(predictor, dataset, decoders=decoders, log_every=log_every)
    results = {}
    for decoder in decoders:
        if config.dataset == "mpii":
            results[decoder] = _pckh(predictions, decoder, records, network.keypoint_set)
        else:
            os.makedirs(out_dir, exist_ok=True)
            result = coco_evaluate(
                predictions, decoder, data.val_ann, network.keypoint_set,
                box_source or GROUND_TRUTH_BOXES,
                os.path.join(out_dir, f"keypoints_results_{decoder}.json"), image_ids=image_ids)
            results[decoder] = {**result.stats, "box_source": result.box_source,
                                "table": str(result)}
    first = dict(results[decoders[0]])
    if len(decoders) > 1:
        first["by_decoder"] = results
    return first


def _pckh(predictions, decoder, records, keypoint_set):
    from skelpose_tf.evaluation.mpii_pckh import compute_pckh

    by_index = [records[int(i)] for i in predictions["record_index"]]
    joints = np.stack([r.keypoints for r in by_index])
    missing = np.stack([r.visibility <= 0 for r in by_index])
    if any(r.head_box is None for r in by_index):
        raise ValueError("MPII validation needs head boxes: pass --val_head_boxes (a "
                         "gt_valid.mat-style file) or use JSON entries with a 'headbox' field.")
    head_boxes = np.stack([r.head_box for r in by_index])
    result = compute_pckh(predictions["keypoints"][decoder], joints, missing, head_boxes,
                          keypoint_set)
    return {"PCKh": result.mean, "PCKh@0.1": result.mean_at_0_1, **{
        f"PCKh {name}": value for name, value in result.groups.items()}, "table": str(result)}


def make_optimizer(config: TrainConfig, steps_per_epoch, global_batch, policy):
    """Adam (AdamW-style decay when `weight_decay`) on the run's schedule; loss-scaled for fp16."""
    lr = config.lr * (global_batch / config.base_batch_size if config.scale_lr else 1.0)
    schedule = WarmupSchedule(
        lr, total_steps=config.epochs * steps_per_epoch, decay=config.lr_decay,
        boundaries=[int(e * steps_per_epoch) for e in config.lr_steps], factor=config.lr_factor,
        warmup_steps=config.warmup_steps)
    optimizer = keras.optimizers.Adam(schedule, weight_decay=config.weight_decay or None)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer, lr


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
    steps_per_epoch = config.steps_per_epoch or max(1, len(data.train_records) // global_batch)
    total_steps = config.epochs * steps_per_epoch

    with strategy.scope():
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
        trainer = PoseTrainer(network, codec, config.skeletal_loss_weight, vector_logs=multi_worker)
        optimizer, lr = make_optimizer(config, steps_per_epoch, global_batch, policy)
        trainer.compile(optimizer=optimizer, jit_compile=config.jit_compile)
        trainer.optimizer.build(trainer.trainable_variables)
        if multi_worker:
            # Keras 3.15 reduces a PerReplica first batch eagerly in its symbolic build and
            # fails (tf-keras-notes.md 5b); everything that build would create exists already.
            trainer._maybe_symbolic_build = lambda *args, **kwargs: None

    backup_dir = os.path.join(config.run_dir, BACKUP_DIR)
    state = cb.load_backup(trainer, backup_dir) or {}
    start_step = int(state.get("step", 0))
    print(f"run: {config.run_dir} | {network.name} {config.input_size[0]}x{config.input_size[1]}"
          f" skeletal attention {'on' if config.skeletal_attention else 'off'} | {policy} | "
          f"strategy {config.strategy} ({replicas} replicas) | global batch {global_batch}, "
          f"lr {lr:g}, {steps_per_epoch} steps/epoch x {config.epochs} epochs"
          + (f" | resuming at step {start_step}" if start_step else ""), file=out, flush=True)

    train_dataset = make_train_dataset(
        data.train_records, keypoint_set, config.input_size, global_batch,
        AugmentConfig(scale_factor=config.scale_factor, rotation_factor=config.rotation_factor,
                      flip_prob=config.flip_prob, half_body_prob=config.half_body_prob),
        seed=config.seed + start_step, report=data.report)
    if multi_worker:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_dataset = train_dataset.with_options(options)

    val_subset = validation_subset(data.val_records, config.val_max_people)
    val_images = next(iter(make_eval_dataset(val_subset[:4], keypoint_set, config.input_size, 4,
                                             report=data.report)))[0]
    callbacks = [
        cb.NanGuard(),
        cb.ValidationCallback(
            lambda net: _numbers(evaluate_network(
                net, val_subset, data, config, os.path.join(config.run_dir, "validation"),
                image_ids=sorted({int(r.image_id) for r in val_subset}))),
            config.run_dir, config.val_every_epochs, config.epochs, state,
            monitor="PCKh" if config.dataset == "mpii" else "AP"),
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
    summary = final_evaluation(config, data, network, out)
    monitor = "PCKh" if config.dataset == "mpii" else "AP"
    summary.update({f"{monitor} ({source.replace('_', ' ')})": result[monitor]
                    for source, result in list(summary.items())})
    summary.update(run_dir=config.run_dir, steps=int(trainer.optimizer.iterations.numpy()),
                   train_seconds=round(train_seconds, 1), skipped=data.report.summary(),
                   best_epoch=state.get("best_epoch"))
    with open(os.path.join(config.run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary


def _numbers(metrics):
    """Numbers only (for logs and the validation history)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def final_evaluation(config, data, network, out):
    """Evaluate the best checkpoint on the whole validation set (both box sources if known)."""
    best_path = os.path.join(config.run_dir, "best.keras")
    if os.path.exists(best_path):
        network = keras.saving.load_model(best_path, safe_mode=True)
    eval_dir = os.path.join(config.run_dir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    summary = {"ground_truth_boxes": evaluate_network(network, data.val_records, data, config,
                                                      eval_dir)}
    print(summary["ground_truth_boxes"]["table"], file=out, flush=True)
    if data.det_boxes and config.dataset != "mpii":
        from skelpose_tf.data.coco import read_coco_detections
        from skelpose_tf.evaluation.coco_metric import detector_box_source

        detections = read_coco_detections(data.det_boxes, data.val_ann, data.val_image_dir,
                                          network.keypoint_set, config.input_size,
                                          report=data.report)
        summary["detector_boxes"] = evaluate_network(
            network, detections, data, config, os.path.join(eval_dir, "detector"),
            box_source=detector_box_source(data.det_boxes))
        print(summary["detector_boxes"]["table"], file=out, flush=True)
    return summary
