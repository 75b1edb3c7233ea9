"""Inference benchmark: Keras (fp32, bf16), the SavedModel and each TFLite model, batch 1 and 16.

For each model (the trained network of `--weights`, and HRNet-W32 256x192 with random weights
when `--w32`), on the CPU with 2 threads everywhere (TF intra/inter-op threads, LiteRT
interpreter threads with XNNPACK):

- `keras fp32`, `keras bf16`: the network's forward pass (`tf.function`, no XLA; bf16 is the
  `mixed_bfloat16` copy of the same weights);
- `saved_model`: the exported SavedModel's `serving_default` (forward pass + decoder);
- `tflite <quantization>`: the MoveNet-contract model (forward pass + decoder inside), built
  for a fixed batch of 1 or 16, run through the LiteRT signature runner.

- `pytorch default`, `pytorch best` (W32 only, where PyTorch is installed; `--peer false`
  skips them): the PyTorch peer (`bench/peer.py`, the official HRNet topology) in NCHW fp32 and
  in channels_last + bf16 autocast, each in a process of its own that stays alive and takes its
  turn with the other configurations (its times are measured inside its process).

Exports for the benchmark are made without the flip test (one forward pass per crop, as the
peer). `int8` calibrates on crops of the synthetic training set. Every configuration is
warmed up, then the configurations take turns (`--repeats` rounds of `--calls` calls each, so
load changes hit all alike); the figure is the median call. Reported: batch-1 latency (ms) and
img/s, batch-16 img/s, model size, and the CPU seconds per image of the process (all threads;
less disturbed by other processes than wall-clock rates on a shared machine). Prints a markdown
table, the ratios to the peer measured in the same run and the goals (W32 only: batch 1 >= 3x
the peer's fastest, batch 16 >= 1.1x), the command, machine, date and load average, and writes
`--out_json`.

    python -m bench.inference --weights runs/demo            # demo model + W32 256x192
    python -m bench.inference --weights none --w32 --repeats 5
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import datetime  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from bench import peer  # noqa: E402
from bench.machine import describe_machine, load_average  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from skelpose_tf.atomic_files import write_json_atomic  # noqa: E402

_WEIGHTS = flags.DEFINE_string("weights", "runs/demo",
                               "Trained model (.keras or run directory); 'none' to skip.")
_W32 = flags.DEFINE_boolean("w32", True, "Also HRNet-W32 256x192 (COCO) with random weights.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "16"], "Batch sizes to time.")
_QUANTIZATIONS = flags.DEFINE_list("quantizations", ["float32", "float16", "dynamic_int8", "int8"],
                                   "TFLite quantisations to time.")
_THREADS = flags.DEFINE_integer("threads", 2, "CPU threads (TF intra/inter-op, LiteRT).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Rounds over all configurations.", lower_bound=1)
_CALLS = flags.DEFINE_list("calls", ["10", "2"],
                           "Timed calls per round for each batch size, in --batch_sizes order.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls before timing.", lower_bound=1)
_DATA_DIR = flags.DEFINE_string("data_dir", "data/synthetic",
                                "Synthetic data set for int8 calibration and input crops.")
_NUM_CALIBRATION = flags.DEFINE_integer("num_calibration", 32, "int8 calibration crops.")
_OUT_JSON = flags.DEFINE_string("out_json", "", "Also write the results here.")
_PEER = flags.DEFINE_enum("peer", "auto", ["auto", "true", "false"],
                          "Time the PyTorch peer with the W32 model (auto: where PyTorch is "
                          "installed).")

GOAL_BATCH1_FACTOR = 3.0
GOAL_BATCH16_FACTOR = 1.1


def _crops(network, count):
    """Real crops of the synthetic training set at the network's input size."""
    from skelpose_tf.data.sources import ensure_synthetic_dataset
    from skelpose_tf.export import dataset_crops

    paths = ensure_synthetic_dataset(_DATA_DIR.value)
    return dataset_crops(paths.train_annotations, paths.train_images, network.keypoint_set,
                         network.input_size, count)


def _batch(crops, size):
    return np.resize(crops, (size, *crops.shape[1:]))


def _keras_forward(network):
    """The network's forward pass on uint8 crops of any batch size (traced once)."""
    spec = tf.TensorSpec([None, *network.input_size, 3], tf.uint8)
    forward = tf.function(lambda images: network(tf.cast(images, tf.float32),
                                                 training=False)["heatmaps"],
                          input_signature=[spec])
    return lambda images: forward(tf.constant(images)).numpy()


def _bfloat16_copy(network):
    config = dict(network.get_config(), dtype="mixed_bfloat16")
    copy = type(network).from_config(config)
    copy.set_weights(network.get_weights())
    return copy


def _directory_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def _configurations(label, network, batch_sizes, scratch):
    """[(model label, config name, batch, function(images), size bytes)]."""
    from skelpose_tf.export import ServingGraph, TFLiteExporter, export_saved_model
    from skelpose_tf.export.runtime import make_interpreter
    from skelpose_tf.export.saved_model import float32_network, load_saved_model

    network = float32_network(network)
    parameters_bytes = 4 * network.count_params()
    bfloat16 = _bfloat16_copy(network)
    configs = []
    forward_fp32, forward_bf16 = _keras_forward(network), _keras_forward(bfloat16)
    for batch in batch_sizes:
        configs.append((label, "keras fp32", batch, forward_fp32, parameters_bytes))
        configs.append((label, "keras bf16", batch, forward_bf16, parameters_bytes))
    print(f"[{label}] exporting the SavedModel", flush=True)
    graph = ServingGraph(network, flip_test=False)
    saved_model_dir = export_saved_model(network, os.path.join(scratch, f"{label}_saved_model"),
                                         include_heatmaps=False, graph=graph)
    serve = load_saved_model(saved_model_dir).signatures["serving_default"]
    for batch in batch_sizes:
        configs.append((label, "saved_model", batch,
                        lambda images: serve(images=tf.constant(images))["keypoints"].numpy(),
                        _directory_size(saved_model_dir)))
    calibration = (_crops(network, _NUM_CALIBRATION.value)
                   if "int8" in _QUANTIZATIONS.value else None)
    with TFLiteExporter(graph) as exporter:
        for batch in batch_sizes:
            for quantization in _QUANTIZATIONS.value:
                print(f"[{label}] converting TFLite {quantization}, batch {batch}", flush=True)
                path = os.path.join(scratch, f"{label}_{quantization}_{batch}.tflite")
                exporter.export(path, quantization, "keypoints", calibration, batch_size=batch)
                runner = make_interpreter(path, num_threads=_THREADS.value).get_signature_runner(
                    "serving_default")
                configs.append((label, f"tflite {quantization}", batch,
                                lambda images, run=runner: run(images=images),
                                os.path.getsize(path)))
    return configs


def _peer_configurations(label, batch_sizes, servers):
    """The PyTorch peer's configurations: a `PeerServer` per setting, timing in its process."""
    configs = []
    for setting in ("default", "best"):
        server = peer.PeerServer(setting, 32, "256x192", _THREADS.value)
        servers.append(server)
        for batch in batch_sizes:
            configs.append((label, f"pytorch {setting}", batch, server, 4 * server.parameters))
    return configs


def _time(configs, inputs, calls):
    """Median wall and CPU seconds per call of every configuration, taking turns (a peer
    server times its calls in its own process)."""
    for _, _, batch, function, _ in configs:
        if isinstance(function, peer.PeerServer):
            function.time_calls(batch, 0, _WARMUP.value)
            continue
        for _ in range(_WARMUP.value):
            function(inputs[batch])
    wall = {i: [] for i in range(len(configs))}
    cpu = {i: [] for i in range(len(configs))}
    for round_index in range(_REPEATS.value):
        for i, (label, name, batch, function, _) in enumerate(configs):
            if isinstance(function, peer.PeerServer):
                walls, cpus = function.time_calls(batch, calls[batch])
                wall[i] += walls
                cpu[i] += cpus
                continue
            for _ in range(calls[batch]):
                started_wall, started_cpu = time.perf_counter(), time.process_time()
                function(inputs[batch])
                wall[i].append(time.perf_counter() - started_wall)
                cpu[i].append(time.process_time() - started_cpu)
        print(f"round {round_index + 1}/{_REPEATS.value} done (load {load_average()})", flush=True)
    return ({i: statistics.median(v) for i, v in wall.items()},
            {i: statistics.median(v) for i, v in cpu.items()})


def _table(configs, wall, cpu, batch_sizes):
    rows = {}
    for i, (label, name, batch, _, size) in enumerate(configs):
        row = rows.setdefault((label, name), {"model": label, "config": name,
                                              "size_mb": round(size / 2**20, 2)})
        row[f"batch{batch}_img_s"] = round(batch / wall[i], 2)
        row[f"batch{batch}_cpu_s_per_img"] = round(cpu[i] / batch, 4)
        if batch == 1:
            row["batch1_latency_ms"] = round(1000 * wall[i], 2)
    header = ["model", "config", "size MB"]
    if 1 in batch_sizes:
        header += ["batch 1 latency ms", "batch 1 img/s"]
    header += [f"batch {b} img/s" for b in batch_sizes if b != 1]
    header += [f"batch {b} CPU s/img" for b in batch_sizes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows.values():
        cells = [row["model"], row["config"], f"{row['size_mb']:.2f}"]
        if 1 in batch_sizes:
            cells += [f"{row['batch1_latency_ms']:.1f}", f"{row['batch1_img_s']:.1f}"]
        cells += [f"{row[f'batch{b}_img_s']:.1f}" for b in batch_sizes if b != 1]
        cells += [f"{row[f'batch{b}_cpu_s_per_img']:.3f}" for b in batch_sizes]
        lines.append("| " + " | ".join(cells) + " |")
    return list(rows.values()), "\n".join(lines)


def _goals(rows, label):
    """Ratios of the project's fastest configuration to the peer's fastest, same run."""
    lines = []
    mine = [r for r in rows if r["model"] == label and not r["config"].startswith("pytorch")]
    peers = [r for r in rows if r["model"] == label and r["config"].startswith("pytorch")]
    for batch, factor in ((1, GOAL_BATCH1_FACTOR), (16, GOAL_BATCH16_FACTOR)):
        key = f"batch{batch}_img_s"
        candidates = [r for r in mine if key in r]
        rivals = [r for r in peers if key in r]
        if not candidates or not rivals:
            continue
        best, rival = (max(group, key=lambda r: r[key]) for group in (candidates, rivals))
        ratio = best[key] / rival[key]
        verdict = "met" if ratio >= factor else "NOT met"
        lines.append(f"- {label} batch {batch}: fastest is {best['config']} at {best[key]:.1f} "
                     f"img/s, the peer's fastest {rival['config']} at {rival[key]:.1f} img/s "
                     f"(same run): {ratio:.2f}x; goal {factor:g}x: {verdict}")
    return lines


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TF's SavedModel writer logs at INFO
    tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
    tf.config.threading.set_inter_op_parallelism_threads(_THREADS.value)
    from skelpose_tf.export.runtime import interpreter_backend
    from skelpose_tf.model_loading import describe_model, load_pose_model
    from skelpose_tf.models.pose_model import build_pose_model

    batch_sizes = [int(b) for b in _BATCH_SIZES.value]
    if len(_CALLS.value) != len(batch_sizes):
        raise app.UsageError("--calls needs one value per --batch_sizes entry.")
    calls = dict(zip(batch_sizes, (int(c) for c in _CALLS.value)))
    load_before = load_average()
    models = []
    if _WEIGHTS.value.lower() != "none":
        network, source = load_pose_model(_WEIGHTS.value)
        models.append((f"demo {describe_model(network)}", network, source))
    if _W32.value:
        w32 = build_pose_model(32, (256, 192), "coco")
        models.append(("W32 256x192 (random weights)", w32, "random initialisation"))
    if not models:
        raise app.UsageError("Nothing to benchmark: give --weights or --w32.")
    all_rows, tables, goals, servers = [], [], [], []
    with_peer = _PEER.value == "true" or (_PEER.value == "auto" and peer.torch_available())
    with tempfile.TemporaryDirectory(prefix="skelpose_bench_") as scratch:
        for label, network, source in models:
            print(f"model {label} from {source}", flush=True)
            configs = _configurations(label, network, batch_sizes, scratch)
            if with_peer and label.startswith("W32"):
                configs += _peer_configurations(label, batch_sizes, servers)
            crops = _crops(network, 16)
            inputs = {b: _batch(crops, b) for b in batch_sizes}
            wall, cpu = _time(configs, inputs, calls)
            rows, table = _table(configs, wall, cpu, batch_sizes)
            all_rows += rows
            tables.append(table)
            if label.startswith("W32"):
                goals += _goals(rows, label)
    for server in servers:
        server.close()
    command = "python -m bench.inference " + " ".join(sys.argv[1:])
    context = {
        "command": command, "date": datetime.datetime.now().astimezone().isoformat(
            timespec="seconds"),
        "machine": describe_machine(), "threads": _THREADS.value,
        "load_average_before": load_before, "load_average_after": load_average(),
        "tensorflow": tf.__version__, "tflite_runtime": interpreter_backend(),
        "repeats": _REPEATS.value, "calls": calls,
        "peer_threads": servers[0].threads if servers else None,
    }
    print()
    for table in tables:
        print(table)
        print()
    if goals:
        print("Goals (ratios to the PyTorch peer measured in this run):")
        print("\n".join(goals))
    for key, value in context.items():
        print(f"{key}: {value}")
    if _OUT_JSON.value:
        write_json_atomic(_OUT_JSON.value, {**context, "rows": all_rows, "goals": goals})


if __name__ == "__main__":
    app.run(main)
