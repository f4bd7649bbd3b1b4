"""`python train.py --config my.yaml` (the command the lora-scripts articles show); the same
as `lora-native train --config my.yaml`."""
import sys

from lora_native.cli import main

if __name__ == "__main__":
    sys.exit(main(["train"] + sys.argv[1:]))
