"""Writes the fuzzing seed corpus (tests/fuzz/corpus/, git-ignored) from the test builders."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from builders import files  # noqa: E402


def main(out=os.path.join(HERE, "corpus")):
    os.makedirs(out, exist_ok=True)
    seeds = files.seed_files()
    for name, data in seeds:
        with open(os.path.join(out, "seed-" + name.encode("ascii", "replace").decode()), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds), out))


if __name__ == "__main__":
    main(*sys.argv[1:])
