"""Sharded TFRecords of person records, and reading them back in the data pipeline.

One `tf.train.Example` per image: the image file's bytes as stored (no re-encoding) and the
fields of every person record of that image (`PersonRecord`: region centre/scale in pixels,
keypoints, raw visibility, box, box score, ids and the record's index in the converted list).
Images go to the shards round-robin. `meta.json` beside the shards records the keypoint set,
the input size whose aspect ratio the regions were made for, the counts per shard and what the
reader skipped or repaired. The converter reads the annotations with the training readers
(`coco.py`, `mpii.py`: the same records are refused or skipped, with the same messages) and
decodes every image once with the training pipeline's rules (`images.load_for_record`), so
missing, unreadable or corrupt images are left out (and counted) before training, and grey,
CMYK and PNG-as-JPEG files are counted as repaired. When no image can be used, it writes
nothing and says why (exit status 1), rather than leaving empty shards.

    python -m skelpose_tf.data.tfrecords --ann person_keypoints_train.json --images DIR \\
        --out OUT_DIR --shards 8 [--format coco|mpii] [--keypoint_set coco] [--input_size 256x192]

`--input_size` must be multiples of 32, as for every entry point (`parse_input_size`).

Reading: pass `TFRecordSource(OUT_DIR)` to `pipeline.make_train_dataset` or
`make_eval_dataset` in place of a list of records. Each image is decoded once for all its
people; training shuffles files, images (`image_buffer`) and person crops (`person_buffer`).
Sharding for multi-worker training splits by file, so write at least as many shards as workers.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contextlib  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from skelpose_tf.atomic_files import (atomic_write, remove_stale_partials,  # noqa: E402
                                      write_json_atomic)
from skelpose_tf.crop_geometry import input_aspect_ratio  # noqa: E402
from skelpose_tf.data import coco, mpii  # noqa: E402
from skelpose_tf.data.images import (ImageDecodeError, load_for_record,  # noqa: E402
                                     read_image_bytes)
from skelpose_tf.data.records import SkipReport  # noqa: E402
from skelpose_tf.keypoints import get_keypoint_set  # noqa: E402

META_FILE = "meta.json"
AUTOTUNE = tf.data.AUTOTUNE
# Images parsed, planned and cut per map call: the augmentation draw, the crop geometry and the
# decode + warp worker then run once per few images instead of once per image.
IMAGES_PER_CALL = 8


def write_tfrecords(records, out_dir, num_shards, keypoint_set, input_size,
                    report: SkipReport | None = None, source="") -> dict:
    """Write person records as sharded TFRecords (one example per image) plus `meta.json`.

    Every image is decoded once with the training pipeline's rules
    (`images.load_for_record`): a missing, unreadable or corrupt image, or one whose size
    differs from the annotation, is left out and counted as skipped; grey, CMYK and PNG content
    (also under a .jpg name) is kept as stored and counted as repaired, as training counts it.
    Shards are written under temporary names and renamed into place once all are complete,
    `meta.json` last; a failure leaves no new shard behind.

    Args:
        records: a sequence of `PersonRecord`s (from the readers).
        out_dir: output directory (created if needed).
        num_shards: number of `.tfrecord` files.
        keypoint_set: the records' keypoint set (its name and size go into meta.json).
        input_size: (height, width) the records' regions were made for.
        report: a `SkipReport` counting images left out or repaired (a new one if None).
        source: a description of the annotation source for meta.json and messages.

    Returns:
        The content of meta.json.

    Raises:
        ValueError: `num_shards` < 1, no records, or none of their images usable (nothing is
            written then; the message gives the reasons and the first image of each).
    """
    keypoint_set = get_keypoint_set(keypoint_set)
    report = SkipReport() if report is None else report
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1. Received: num_shards={num_shards}")
    of_source = f" of {source}" if source else ""
    if not records:
        raise ValueError(f"No person record{of_source} to write; nothing written to {out_dir} "
                         f"({report.one_line()}).")
    by_image = {}
    for index, record in enumerate(records):
        by_image.setdefault(record.image_path, []).append(index)
    created = not os.path.isdir(out_dir)
    remove_stale_partials(out_dir)  # shards of a killed converter
    names = [f"records-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    counts = [{"file": name, "num_images": 0, "num_records": 0} for name in names]
    try:
        with contextlib.ExitStack() as stack:  # exits: writers closed, then files renamed
            temporaries = [stack.enter_context(atomic_write(os.path.join(out_dir, name)))
                           for name in names]
            writers = [stack.enter_context(contextlib.closing(tf.io.TFRecordWriter(path)))
                       for path in temporaries]
            written = _write_images(records, by_image, writers, counts, report)
            if not written:
                raise ValueError(
                    f"None of the {len(by_image)} images of the person records{of_source} "
                    f"could be used; no shards written to {out_dir} ({report.one_line()}).")
        meta = {
            "keypoint_set": keypoint_set.name, "num_keypoints": keypoint_set.num_keypoints,
            "input_size": [int(v) for v in input_size], "source": source,
            "num_images": written, "num_records": sum(c["num_records"] for c in counts),
            "shards": counts, "skipped": report.skipped, "repaired": report.repaired,
        }
        write_json_atomic(os.path.join(out_dir, META_FILE), meta, indent=1)
    except BaseException:
        if created:  # leave no empty directory behind
            with contextlib.suppress(OSError):
                os.rmdir(out_dir)
        raise
    return meta


def _write_images(records, by_image, writers, counts, report) -> int:
    """Write one example per usable image, round-robin over `writers`; returns their number."""
    written = 0
    for path, indices in by_image.items():
        where = f"records {indices}"
        try:
            data = read_image_bytes(path)
        except ImageDecodeError as error:
            report.skip(error.reason, f"{where} ({path})")
            continue
        if load_for_record(data, path, records[indices[0]].image_size, where, report) is None:
            continue
        shard = written % len(writers)
        writers[shard].write(_example(data, path, [records[i] for i in indices], indices))
        counts[shard]["num_images"] += 1
        counts[shard]["num_records"] += len(indices)
        written += 1
    return written


def _example(data, path, records, indices) -> bytes:
    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(values)))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=np.ravel(values)))

    def raw(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    first = records[0]
    feature = {
        "image/encoded": raw(data),
        "image/path": raw(os.fsencode(path)),
        "image/id": ints([first.image_id]),
        "image/size": ints(first.image_size),
        "person/record_index": ints(indices),
        "person/annotation_id": ints([r.annotation_id for r in records]),
        "person/box": floats([r.box for r in records]),
        "person/center": floats([r.center for r in records]),
        "person/scale": floats([r.scale for r in records]),
        "person/keypoints": floats([r.keypoints for r in records]),
        "person/visibility": floats([r.visibility for r in records]),
        "person/box_score": floats([r.box_score for r in records]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class TFRecordSource:
    """Shards written by `write_tfrecords`, as an input of `make_train_dataset`/`make_eval_dataset`.

    Args:
        directory: the converter's output directory (with meta.json).
        image_buffer: images in the training shuffle buffer.
        person_buffer: person crops in the second training shuffle buffer (people of one image
            are produced together; this spreads them over batches).
    """

    def __init__(self, directory, image_buffer=256, person_buffer=256):
        meta_path = os.path.join(directory, META_FILE)
        try:
            with open(meta_path) as file:
                self.meta = json.load(file)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"Cannot read {meta_path} (write the shards with "
                             f"`python -m skelpose_tf.data.tfrecords`): {error}") from None
        self.directory = directory
        self.image_buffer = image_buffer
        self.person_buffer = person_buffer

    def _files(self, maker, num_shards, shard_index):
        """This pipeline's shard files and their number of records, after checking the meta."""
        if self.meta["num_keypoints"] != maker.num_keypoints:
            raise ValueError(
                f"{self.directory} holds {self.meta['num_keypoints']} keypoints per person "
                f"({self.meta['keypoint_set']!r}) but the keypoint set "
                f"{maker.keypoint_set.name!r} has {maker.num_keypoints}.")
        written_aspect = input_aspect_ratio(self.meta["input_size"])
        if not np.isclose(written_aspect, maker.aspect_ratio):
            raise ValueError(
                f"{self.directory} was written for input size {self.meta['input_size']} "
                f"(aspect ratio {written_aspect:.4f}); the pipeline asks for "
                f"{list(maker.input_size)}. Convert again with --input_size.")
        shards = [s for s in self.meta["shards"] if s["num_records"] > 0]
        if len(shards) < num_shards:
            raise ValueError(f"{self.directory} has {len(shards)} non-empty shard files, fewer "
                             f"than the {num_shards} input pipelines; write more shards.")
        mine = shards[shard_index::num_shards]
        files = [os.path.join(self.directory, s["file"]) for s in mine]
        return files, sum(s["num_records"] for s in mine)

    def train_batches(self, maker, batch_size, num_shards, shard_index, seed, sample_seed,
                      shuffle_buffer, deterministic):
        files, num_records = self._files(maker, num_shards, shard_index)
        dataset = tf.data.Dataset.from_tensor_slices(files)
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
        dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                                     num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        dataset = dataset.shuffle(self.image_buffer, seed=seed)
        dataset = tf.data.Dataset.zip(dataset, tf.data.Dataset.random(seed=sample_seed))
        load = _image_loader(maker, num_records, must_progress=True)
        dataset = dataset.batch(IMAGES_PER_CALL).map(load, num_parallel_calls=AUTOTUNE,
                                                     deterministic=deterministic)
        dataset = dataset.unbatch().filter(lambda sample: sample["ok"])
        dataset = dataset.shuffle(shuffle_buffer or self.person_buffer, seed=seed)
        return dataset.batch(batch_size, drop_remainder=True)

    def eval_samples(self, maker, num_shards, shard_index):
        files, num_records = self._files(maker, num_shards, shard_index)
        dataset = tf.data.TFRecordDataset(files)
        dataset = dataset.map(lambda example: (example, tf.constant(0, tf.int64)))
        load = _image_loader(maker, num_records, must_progress=False)
        dataset = dataset.batch(IMAGES_PER_CALL).map(load, num_parallel_calls=AUTOTUNE,
                                                     deterministic=True)
        return dataset.unbatch().filter(lambda sample: sample["ok"])


_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/path": tf.io.FixedLenFeature([], tf.string),
    "image/id": tf.io.FixedLenFeature([], tf.int64),
    "image/size": tf.io.FixedLenFeature([2], tf.int64),
    "person/record_index": tf.io.VarLenFeature(tf.int64),
    "person/center": tf.io.VarLenFeature(tf.float32),
    "person/scale": tf.io.VarLenFeature(tf.float32),
    "person/keypoints": tf.io.VarLenFeature(tf.float32),
    "person/visibility": tf.io.VarLenFeature(tf.float32),
    "person/box_score": tf.io.VarLenFeature(tf.float32),
}


def _image_loader(maker, num_records, must_progress):
    """A tf.data map function: a batch of serialized examples [n] + their seeds [n] -> the
    samples of all their people [P, ...] (in image order, then person order).

    The crops are planned in the graph (`_SampleMaker.plan`: one augmentation draw, then
    `crop_geometry`, for all P people), then one `tf.numpy_function` call decodes the n images
    and cuts the crops. Person j of an image has the augmentation seed image seed + j.
    """
    height, width = maker.input_size
    k = maker.num_keypoints

    def load_numpy(data, paths, sizes, image_of_person, record_index, matrices, corners):
        people = len(record_index)
        crops = np.zeros((people, height, width, 3), np.uint8)
        ok = np.zeros((people,), bool)
        for i, (encoded, path, size) in enumerate(zip(data, paths, sizes)):
            mine = np.flatnonzero(image_of_person == i)
            path = os.fsdecode(path)
            image = maker.load(encoded, path, size, f"records {record_index[mine].tolist()}")
            if image is None:
                for index in record_index[mine]:
                    maker.failed(index, num_records, must_progress)
                continue
            for j in mine:
                crops[j] = maker.warp(image, matrices[j], corners[j])
            ok[mine] = True
        return crops, ok

    def load(serialized, seeds):
        example = tf.io.parse_example(serialized, _FEATURES)
        people = tf.RaggedTensor.from_sparse(example["person/record_index"])
        image_of_person = people.value_rowids()
        record_index = people.values

        def per_person(name, shape):
            return tf.reshape(example[name].values, [-1, *shape])

        center, scale = per_person("person/center", [2]), per_person("person/scale", [2])
        keypoints = per_person("person/keypoints", [k, 2])
        visibility = per_person("person/visibility", [k])
        person_seeds = (tf.gather(seeds, image_of_person)
                        + tf.ragged.range(people.row_lengths()).values)
        plan = maker.plan(center, scale, keypoints, visibility, person_seeds)
        crops, ok = tf.numpy_function(
            load_numpy,
            [example["image/encoded"], example["image/path"],
             tf.cast(example["image/size"], tf.int32), image_of_person, record_index,
             plan["matrix"], plan["corners"]],
            [tf.uint8, tf.bool], stateful=False)
        crops.set_shape((None, height, width, 3))
        ok.set_shape((None,))
        return {
            "image": crops, "keypoints": tf.ensure_shape(plan["keypoints"], (None, k, 2)),
            "visibility": tf.ensure_shape(plan["visibility"], (None, k)), "ok": ok,
            "record_index": record_index,
            "image_id": tf.gather(example["image/id"], image_of_person),
            "center": center, "scale": scale,
            "box_score": example["person/box_score"].values,
        }

    return load


# Command line ------------------------------------------------------------------------------------

def _define_flags():
    """The converter's flags; defined only when run as a script, so importing this module (for
    `TFRecordSource`) adds no flags to a training script's."""
    return {
        "ann": flags.DEFINE_string("ann", None, "COCO keypoint JSON or HRNet-layout MPII JSON."),
        "images": flags.DEFINE_string("images", None, "Directory of the annotation's images."),
        "out": flags.DEFINE_string("out", None, "Output directory for the shards and meta.json."),
        "shards": flags.DEFINE_integer("shards", 8, "Number of TFRecord files."),
        "format": flags.DEFINE_enum("format", "coco", ["coco", "mpii"], "Annotation format."),
        "keypoint_set": flags.DEFINE_string(
            "keypoint_set", None, "Keypoint set name or JSON file (default: coco / mpii)."),
        "input_size": flags.DEFINE_string(
            "input_size", "256x192", "Model input HEIGHTxWIDTH the regions are made for."),
    }


def _main(holders, argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]} (flags are --name=value).")
    values = {name: holder.value for name, holder in holders.items()}
    for name in ("ann", "images", "out"):
        if not values[name]:
            raise app.UsageError(f"--{name} is required.")
    from skelpose_tf.models.pose_model import parse_input_size  # Keras: for the script only

    try:  # the rule of every entry point: multiples of 32
        input_size = parse_input_size(values["input_size"])
    except ValueError as error:
        raise app.UsageError(f"--input_size: {error}") from None
    ann, image_dir, out_dir = values["ann"], values["images"], values["out"]
    if not os.path.isfile(ann):
        raise ValueError(f"Annotation file (--ann) not found: {ann}")
    if not os.path.isdir(image_dir):
        raise ValueError(f"Image folder (--images) not found: {image_dir}")
    keypoint_set = get_keypoint_set(values["keypoint_set"] or values["format"])
    report = SkipReport()
    if values["format"] == "coco":
        records = coco.read_coco_keypoints(ann, image_dir, keypoint_set, input_size,
                                           report=report)
    else:
        records = mpii.read_mpii(ann, image_dir, input_size, keypoint_set=keypoint_set,
                                 report=report)
    if not records:
        raise ValueError(f"No usable person record in {ann} with images in {image_dir} "
                         f"(--images); nothing written to {out_dir}: {report.one_line()}")
    meta = write_tfrecords(records, out_dir, values["shards"], keypoint_set, input_size,
                           report=report, source=ann)
    print(f"{meta['num_records']} person records of {meta['num_images']} images in "
          f"{values['shards']} shards in {out_dir}\n{report.summary()}")


if __name__ == "__main__":
    from skelpose_tf import cli

    _HOLDERS = _define_flags()
    cli.run(lambda argv: _main(_HOLDERS, argv), "python -m skelpose_tf.data.tfrecords")
