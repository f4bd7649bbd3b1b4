#!/usr/bin/env python3
"""Caption a folder of images, as the lora-scripts articles run it:

    python tools/auto_label.py --input data/style_train --output data/style_train/metadata.csv

A thin entry point to `lora-native caption` (same options: --captioner blip|wd14|clip, --model PATH,
--format csv|txt, --trigger, --prefix, --overwrite, ...; see --help). --output ending in .csv writes
or merges into that metadata.csv; a folder (or --format txt) writes a .txt beside each image.
Runs from a checkout without installing: the checkout's lora_native is imported (the repository
root goes first on sys.path).
"""
import argparse
import os
import sys


def main(argv=None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "lora_native", "__init__.py")):  # run from a checkout: use it
        sys.path.insert(0, root)
    from lora_native import cli

    parser = argparse.ArgumentParser(prog="auto_label.py", description="Caption the images of --input with a "
                                     "local BLIP, WD14 or CLIP model (lora-native caption).")
    cli.add_caption_arguments(parser, input_option=True)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    return cli.run_guarded(cli.run_caption, args)


if __name__ == "__main__":
    sys.exit(main())
