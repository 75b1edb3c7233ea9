"""Resolve train.py flagfiles in a separate process (keeps train.py's flags out of pytest).

    python tests/resolve_configs.py ARGS_JSON   ->   prints {"flags": [...], "results": [...]}
ARGS_JSON is a JSON list of argument lists. "flags" names the flags train.py defines; each
result is {"config": TrainConfig as a dict, "flags_text": run_flags_text()} or, for arguments
that fail, {"error": message}.
"""

import dataclasses
import importlib.util
import json
import os
import sys

from absl import flags

import skelpose_tf.models.pose_model  # noqa: F401 - what train.py imports defines its flags first
import skelpose_tf.training.config  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argument_lists):
    others = set(flags.FLAGS)
    spec = importlib.util.spec_from_file_location("train_script", os.path.join(ROOT, "train.py"))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    defined = sorted(set(flags.FLAGS) - others)
    os.chdir(ROOT)  # nested --flagfile paths are relative to the repository root
    results = []
    for argv in argument_lists:
        flags.FLAGS.unparse_flags()
        try:
            flags.FLAGS(["train.py", *argv])
            results.append({"config": dataclasses.asdict(train.build_config()),
                            "flags_text": train.run_flags_text()})
        except (ValueError, flags.Error) as error:
            results.append({"error": str(error)})
    print(json.dumps({"flags": defined, "results": results}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
