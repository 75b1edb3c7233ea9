"""`train(config)`: data, model, optimiser, callbacks, resume, final evaluation (and export)."""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import keras
import tensorflow as tf

from skelpose_tf.atomic_files import remove_stale_partials, write_json_atomic, write_text_atomic
from skelpose_tf.data.augment import AugmentConfig
from skelpose_tf.data.pipeline import make_eval_dataset, make_train_dataset
from skelpose_tf.data.records import SkipReport
from skelpose_tf.keypoints import get_keypoint_set
from skelpose_tf.model_loading import load_pose_model
from skelpose_tf.models.pose_model import TOPOLOGIES, build_pose_model
from skelpose_tf.training import callbacks as cb
from skelpose_tf.training.config import TrainConfig
from skelpose_tf.training.distribution import (barrier, make_strategy, same_on_all_workers,
                                               worker_directory, worker_role)
from skelpose_tf.training.initial_weights import seed_initial_weights
from skelpose_tf.training.optimizers import FusedAdam
from skelpose_tf.training.run_state import (CHECKPOINT_DIR, RunState, RunStateError,
                                            existing_results, model_fingerprint)
from skelpose_tf.training.schedules import WarmupSchedule, epoch_boundaries
from skelpose_tf.training.trainer import PoseTrainer



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
        val_report: the same for reading `val_records` and cutting the pictures' crops (the
            validation evaluations count theirs in their own notes).
    """

    def __init__(self, config: TrainConfig, keypoint_set, out=sys.stdout):
        from skelpose_tf.data import coco, mpii
        from skelpose_tf.data.sources import DataSource

        self.report = SkipReport()
        self.val_report = SkipReport()
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
        self.val_records = read(paths["val_ann"], paths["val_images"], self.val_report)
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
    from skelpose_tf.data.sources import ensure_synthetic_dataset

    paths = ensure_synthetic_dataset(config.data_dir, config.synthetic_train,
                                     config.synthetic_val, out=out,
                                     same_sides=config.synthetic_same_sides)
    return {"train_ann": paths.train_annotations, "train_images": paths.train_images,
            "val_ann": paths.val_annotations, "val_images": paths.val_images,
            "det_boxes": config.val_det_boxes or paths.val_detections}


def evaluate(network, source, config: TrainConfig, out_dir, max_people=0, log_every=0):
    """The real evaluator (`skelpose_tf.model_evaluation`) with the run's decoder and flip test."""
    from skelpose_tf.model_evaluation import evaluate_model

    return evaluate_model(network, source, decoders=[config.decoder], flip_test=config.flip_test,
                          batch_size=config.batch_size, out_dir=out_dir,
                          max_people=max_people, log_every=log_every)[config.decoder]


def headline_metrics(evaluation):
    """Numbers of an `Evaluation`: COCO's 10 stats, or MPII's PCKh@0.5 / @0.1 means."""
    if evaluation.dataset == "mpii":
        return {"PCKh": evaluation.metric.mean,
                "PCKh@0.1 (official, thr 0.11)": evaluation.metric.mean_at_0_1,
                "PCKh@0.1 (exact)": evaluation.metric.mean_at_exact_0_1}
    return dict(evaluation.metric.stats)


def make_optimizer(config: TrainConfig, steps_per_epoch, global_batch, policy):
    """Adam (fused kernel; AdamW-style decay when `weight_decay`) on the run's schedule;
    loss-scaled for fp16."""
    lr = config.lr * (global_batch / config.base_batch_size if config.scale_lr else 1.0)
    schedule = WarmupSchedule(
        lr, total_steps=config.epochs * steps_per_epoch, decay=config.lr_decay,
        boundaries=epoch_boundaries(config.lr_steps, steps_per_epoch), factor=config.lr_factor,
        warmup_steps=config.warmup_steps)
    optimizer = FusedAdam(schedule, weight_decay=config.weight_decay or None)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer, lr


def build_trainer(config: TrainConfig, keypoint_set, steps_per_epoch, global_batch, policy, out):
    """Network (with backbone weights), codec, compiled `PoseTrainer`, and the effective lr.

    Call inside the strategy's scope.
    """
    keras.utils.set_random_seed(config.seed)  # the same initial weights for the same seed
    topology = TOPOLOGIES["tiny" if config.tiny_topology else "official"]
    network = build_pose_model(config.width, config.input_size, keypoint_set,
                               config.skeletal_attention, dtype=policy, **topology,
                               sigma=config.sigma or None, decoder=config.decoder)
    # Per-name draws: the layers both architectures have start equal (initial_weights.py).
    seed_initial_weights(network, config.seed)
    if config.backbone_weights:
        if not os.path.exists(config.backbone_weights):
            raise FileNotFoundError(
                f"--backbone_weights={config.backbone_weights} does not exist. Convert a "
                "published checkpoint first (README, 'Published HRNet weights') or pass "
                "--backbone_weights=none to start from random initialisation.")
        from skelpose_tf.convert_weights import load_backbone_weights

        print(load_backbone_weights(network, config.backbone_weights), file=out, flush=True)
    codec = network.codec
    multi_worker = config.strategy == "multi_worker"
    trainer = PoseTrainer(network, codec, config.skeletal_loss_weight, vector_logs=multi_worker,
                          micro_batches=config.micro_batches)
    optimizer, lr = make_optimizer(config, steps_per_epoch, global_batch, policy)
    trainer.compile(optimizer=optimizer, jit_compile=config.jit_compile)
    if multi_worker:
        # Keras 3.15 reduces a PerReplica first batch eagerly in its symbolic build and fails
        # (docs/design.md section 7.2); everything that build would create exists already.
        trainer._maybe_symbolic_build = lambda *args, **kwargs: None
    return network, codec, trainer, lr


def train(config: TrainConfig, out=sys.stdout, *, restart=False, flags_text=None):
    """Train a run, or resume it from its newest intact checkpoint; returns the summary dict
    also written to `summary.json`.

    Args:
        config: the run's settings.
        out: stream for the progress lines.
        restart: move an existing run directory aside (`<run_dir>.replaced-<time>`) and start
            from step 0 instead of resuming. Without it, a run directory that holds results
            but no intact checkpoint is an error (`RunStateError`), never a silent fresh start.
        flags_text: the run's flags, written to `<run_dir>/flags.cfg` by the chief.

    Multi-worker runs (`strategy="multi_worker"`): every worker calls `train` with the same
    config; only the chief writes `run_dir` (which must be on storage all workers see, since
    every worker restores the chief's checkpoints); the others write a temporary directory.
    """
    started = time.time()
    strategy = make_strategy(config.strategy, config.cpu_replicas)
    role = worker_role(strategy)
    if restart and role.is_chief:
        _move_run_aside(config.run_dir, out)
    with worker_directory(config.run_dir, role) as out_dir:
        if role.is_chief:
            os.makedirs(config.run_dir, exist_ok=True)
        return _train(config, strategy, role, out_dir, restart, flags_text, started, out)


def _move_run_aside(run_dir, out):
    if not os.path.isdir(run_dir) or not os.listdir(run_dir):
        return
    aside = f"{os.path.normpath(run_dir)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(run_dir, aside)
    print(f"run: --restart: moved the previous run to {aside}", file=out, flush=True)


def _restore_or_start(config, strategy, role, trainer, out_dir, restart, out):
    """The run's `RunState`, restored from the newest intact checkpoint, and whether it was.

    The chief restores (and repairs) `<run_dir>/checkpoints`; the other workers only read it
    and save into `out_dir`. Raises `RunStateError` when the workers restored different steps
    or when the run directory holds results but no checkpoint (without `restart`).
    """
    fingerprint = model_fingerprint(trainer.network)
    run_state = RunState(trainer, os.path.join(out_dir, CHECKPOINT_DIR), out=out)
    resumed = False
    if role.is_chief:
        resumed = run_state.restore(fingerprint)
    elif not restart:
        reader = RunState(trainer, os.path.join(config.run_dir, CHECKPOINT_DIR), out=out)
        resumed = reader.restore(fingerprint, read_only=True)
        run_state.progress.values = reader.progress.values
    if not same_on_all_workers(strategy, run_state.step):
        raise RunStateError(
            f"The workers restored different steps (this one: {run_state.step}). Every worker "
            f"must read the chief's checkpoints: put --run_dir={config.run_dir} on storage that "
            "all machines see (NFS, a cloud bucket) and rerun the same command on every worker.")
    if not resumed:
        run_state.progress.values = {"fingerprint": fingerprint, "epochs_closed": 0}
        found = existing_results(config.run_dir) if role.is_chief else []
        if found:
            raise RunStateError(
                f"{config.run_dir} holds results of an earlier run ({', '.join(found)}) but "
                f"no checkpoint to resume from. Pass --restart to move them aside and start "
                "over, or choose another --run_dir.")
    return run_state, resumed


def _tidy_run_dir(run_dir, flags_text, out):
    """Remove what killed writers left behind; write `flags.cfg` (only once the checkpoint
    is known to match the flags, so wrong flags never replace the run's own)."""
    for directory in (run_dir, os.path.join(run_dir, "pictures")):
        for name in remove_stale_partials(directory):
            print(f"run: removed {os.path.join(directory, name)}, left by a killed run",
                  file=out, flush=True)
    if flags_text is not None:
        write_text_atomic(os.path.join(run_dir, "flags.cfg"), flags_text)


def _epoch_end_callbacks(config, role, run_state, data, keypoint_set, codec, out_dir, monitor):
    """The callbacks with end-of-epoch work, the checkpoint last: validation and pictures on
    the chief, then `RunCheckpoint` on every worker."""
    checkpoint = cb.RunCheckpoint(run_state, config.backup_every_steps)
    if not role.is_chief:
        return [checkpoint]
    validation = cb.ValidationCallback(
        lambda net: headline_metrics(evaluate(
            net, data.val_source, config, os.path.join(out_dir, "validation"),
            max_people=config.val_max_people)),
        out_dir, config.val_every_epochs, config.epochs, run_state.progress.values,
        monitor=monitor)
    pictures = cb.ImageLogger(
        os.path.join(out_dir, "tensorboard"), _picture_crops(data, keypoint_set,
                                                             config.input_size),
        codec, config.image_every_epochs, png_dir=os.path.join(out_dir, "pictures"))
    return [validation, pictures, checkpoint]


def _close_pending_epochs(epoch_end, trainer, closed, finished, out):
    """Run the end-of-epoch work of epochs `closed .. finished - 1`: their steps all ran, but
    a kill came before their validation and `last.keras` (between the last step's checkpoint
    and the epoch's)."""
    if closed >= finished:
        return
    pending = keras.callbacks.CallbackList(epoch_end, model=trainer)
    for epoch in range(closed, finished):
        print(f"run: finishing epoch {epoch + 1} (its validation was interrupted)", file=out,
              flush=True)
        pending.on_epoch_end(epoch, {})


def _train(config, strategy, role, out_dir, restart, flags_text, started, out):
    policy = resolve_precision(config.mixed_precision)
    keypoint_set = get_keypoint_set(config.keypoint_set)
    data = TrainingData(config, keypoint_set, out)
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    steps_per_epoch = config.steps_per_epoch or max(1, data.num_train // global_batch)
    monitor = "PCKh" if config.dataset == "mpii" else "AP"

    with strategy.scope():
        network, codec, trainer, lr = build_trainer(config, keypoint_set, steps_per_epoch,
                                                    global_batch, policy, out)
    run_state, resumed = _restore_or_start(config, strategy, role, trainer, out_dir, restart, out)
    if role.is_chief:
        _tidy_run_dir(config.run_dir, flags_text, out)
    progress = run_state.progress.values
    start_step = run_state.step
    print(f"run: {config.run_dir} | {network.name} {config.input_size[0]}x{config.input_size[1]}"
          f" skeletal attention {'on' if config.skeletal_attention else 'off'} | {policy} | "
          f"strategy {config.strategy} ({replicas} replicas"
          + (f", {role}" if role.num_workers > 1 else "") + f") | global batch {global_batch}, "
          f"lr {lr:g}, {steps_per_epoch} steps/epoch x {config.epochs} epochs"
          + (f" | resuming at step {start_step}" if resumed else ""), file=out, flush=True)

    progress["data_seed"] = config.seed + start_step
    train_dataset = _train_dataset(config, data, keypoint_set, strategy, global_batch,
                                   progress["data_seed"])
    epoch_end = _epoch_end_callbacks(config, role, run_state, data, keypoint_set, codec,
                                     out_dir, monitor)
    callbacks = [cb.NanGuard(), *epoch_end[:-1]]
    if role.is_chief:
        callbacks += [keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard")),
                      keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"),
                                                append=True)]
    callbacks.append(epoch_end[-1])  # the checkpoint last: it records the epoch's work as done

    epoch, done_in_epoch = divmod(start_step, steps_per_epoch)
    _close_pending_epochs(epoch_end, trainer, int(progress.get("epochs_closed", 0)),
                          min(epoch, config.epochs), out)
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
    summary = {"run_dir": config.run_dir, "steps": run_state.step,
               "train_seconds": round(train_seconds, 1), "worker": str(role),
               "decoding": network.codec.describe_decoding()}
    if not role.is_chief:
        barrier(strategy)  # wait for the chief's evaluation and export, then leave together
        return summary  # evaluation, export and the summary are the chief's
    evaluations = final_evaluation(config, data, out)
    summary.update({f"{monitor} ({source.replace('_', ' ')})": result[monitor]
                    for source, result in evaluations.items()})
    summary.update(evaluations)
    if config.export:
        summary["export"] = export_best(config, data, out)
    summary.update(skipped=data.report.summary(), skipped_validation=data.val_report.summary(),
                   best_epoch=(progress.get("best") or {}).get("epoch"),
                   total_seconds=round(time.time() - started, 1))
    write_json_atomic(os.path.join(config.run_dir, "summary.json"), summary)
    barrier(strategy)
    return summary


def _train_dataset(config, data, keypoint_set, strategy, global_batch, seed):
    """The training dataset; under multi-worker, each worker builds only its share
    (`distribute_datasets_from_function`: a slice of every global batch, or whole TFRecord
    files)."""
    augment = AugmentConfig(scale_factor=config.scale_factor,
                            rotation_factor=config.rotation_factor, flip_prob=config.flip_prob,
                            half_body_prob=config.half_body_prob)

    def dataset_fn(context=None):
        batch = global_batch if context is None else context.get_per_replica_batch_size(
            global_batch) * context.num_replicas_in_sync // context.num_input_pipelines
        return make_train_dataset(data.train_input, keypoint_set, config.input_size, batch,
                                  augment, seed=seed, shard=context, report=data.report,
                                  deterministic=config.deterministic_data)

    if config.strategy == "multi_worker":
        return strategy.distribute_datasets_from_function(dataset_fn)
    return dataset_fn()


def _picture_crops(data, keypoint_set, input_size, count=4):
    """The first `count` readable validation crops (uint8 [n <= count, H, W, 3]) for pictures.

    Unreadable validation images are passed over (the evaluation pipeline drops them) and
    counted in `data.val_report`.

    Raises:
        ValueError: no validation person at all, or none of their images readable (naming the
            image folder and the first bad file of each reason).
    """
    folder = data.val_source.image_dir
    if not data.val_records:
        raise ValueError(f"No usable validation person in {data.val_source.annotation_file} "
                         f"with images in {folder}: {data.val_report.one_line()}")
    dataset = make_eval_dataset(data.val_records, keypoint_set, input_size, count,
                                report=data.val_report)
    for images, _ in dataset.take(1):
        return images
    raise ValueError(f"None of the validation images in {folder} could be read "
                     f"({data.val_report.one_line()}); check the validation image folder.")


def export_best(config, data, out, num_calibration=200, num_verification=64):
    """Export the best checkpoint (SavedModel + TFLite), verify it, and compare COCO AP.

    int8 calibration crops come from the training set, verification crops from the validation
    set (real crops through the evaluation pipeline). Raises `ExportVerificationError` when an
    artifact is past its tolerance. Returns a summary dict.
    """
    from skelpose_tf import export

    network, _ = load_pose_model(os.path.join(config.run_dir, "best.keras"))
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


def final_evaluation(config, data, out):
    """Evaluate the best checkpoint on the whole validation set (both box sources if known)."""
    best = os.path.join(config.run_dir, "best.keras")
    last = os.path.join(config.run_dir, "last.keras")
    if not os.path.exists(best) and os.path.exists(last):
        print(f"evaluation: {best} was never written (no validation improved on -inf); "
              f"evaluating {last}", file=out, flush=True)
        best = last
    network, _ = load_pose_model(best)
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
