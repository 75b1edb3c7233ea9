"""Resolve train.py flagfiles in a separate process (keeps train.py's flags out of pytest).

    python tests/resolve_configs.py ARGS_JSON   ->   prints a JSON list of TrainConfig dicts
ARGS_JSON is a JSON list of argument lists; an entry that fails becomes {"error": message}.
"""

import dataclasses
import importlib.util
import json
import os
import sys

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argument_lists):
    spec = importlib.util.spec_from_file_location("train_script", os.path.join(ROOT, "train.py"))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    os.chdir(ROOT)  # nested --flagfile paths are relative to the repository root
    results = []
    for argv in argument_lists:
        flags.FLAGS.unparse_flags()
        try:
            flags.FLAGS(["train.py", *argv])
            results.append(dataclasses.asdict(train.build_config()))
        except (ValueError, flags.Error) as error:
            results.append({"error": str(error)})
    print(json.dumps(results))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
