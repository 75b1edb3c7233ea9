"""Runs `train.py` and kills itself with SIGKILL at a chosen instant (test helper).

    SKELPOSE_KILL=POINT:N python tests/killing_train.py [train.py flags]

POINT is where the N-th event (counted in this process) ends the process:
- `checkpoint_index`: a checkpoint's files are written, its index entry is not;
- `checkpoint_random`: a random instant inside a checkpoint save (0 to 1.5 times the length of
  the previous save);
- `best_keras`: `best.keras` is completely written under its temporary name, not yet renamed.

Nothing is patched in the project; the hooks wrap TensorFlow's and the OS's own functions.
"""

import os
import random
import runpy
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def counter(target):
    count = [0]

    def hit():
        count[0] += 1
        return count[0] == target
    return hit


def install(point, target):
    from tensorflow.python.checkpoint import checkpoint_management

    hit = counter(target)
    if point == "checkpoint_index":
        original_save = checkpoint_management.CheckpointManager.save
        original_update = checkpoint_management.update_checkpoint_state_internal
        armed = [False]

        def save(self, *args, **kwargs):
            armed[0] = hit()
            return original_save(self, *args, **kwargs)

        def update_index(*args, **kwargs):
            if armed[0]:  # the target save's files are written; its index update comes next
                die()
            return original_update(*args, **kwargs)
        checkpoint_management.CheckpointManager.save = save
        checkpoint_management.update_checkpoint_state_internal = update_index
    elif point == "checkpoint_random":
        original_save = checkpoint_management.CheckpointManager.save
        last = [0.05]

        def save(self, *args, **kwargs):
            if hit():
                delay = random.uniform(0.0, 1.5 * last[0])
                threading.Thread(target=lambda: (time.sleep(delay), die()), daemon=True).start()
            started = time.perf_counter()
            result = original_save(self, *args, **kwargs)
            last[0] = time.perf_counter() - started
            return result
        checkpoint_management.CheckpointManager.save = save
    elif point == "best_keras":
        import skelpose_tf.atomic_files as atomic_files

        original_replace = os.replace

        class KillingOs:
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def replace(source, destination):
                if str(destination).endswith("best.keras") and hit():
                    die()
                return original_replace(source, destination)
        atomic_files.os = KillingOs()
    else:
        raise SystemExit(f"unknown kill point {point!r}")


if __name__ == "__main__":
    if os.environ.get("SKELPOSE_KILL"):
        point, target = os.environ["SKELPOSE_KILL"].split(":")
        install(point, int(target))
    train_py = os.path.join(os.path.dirname(HERE), "train.py")
    sys.argv = [train_py, *sys.argv[1:]]
    runpy.run_path(train_py, run_name="__main__")
