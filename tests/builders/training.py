"""Tiny training setups: a few small captioned pictures and a config dict around a tiny model."""
import os

import numpy as np
from PIL import Image

from builders.dataset import textured

CAPTIONS = ["a red circle on blue", "green stripes", "a yellow square", "purple dots on white", "an orange wave",
            "grey noise", "a pink star", "a teal ring"]


def make_image_folder(folder, count=4, size=(64, 64), seed=0):
    """`count` captioned pictures with a metadata.csv, as `lora-native clean` writes them."""
    os.makedirs(folder, exist_ok=True)
    rows = ["filename,prompt"]
    for i in range(count):
        name = "img_%02d.png" % i
        Image.fromarray(textured(seed + i, size, hue=(40 + 50 * i % 200, 200 - 30 * i % 150, 90))).save(
            os.path.join(folder, name))
        rows.append('%s,"%s"' % (name, CAPTIONS[i % len(CAPTIONS)]))
    with open(os.path.join(folder, "metadata.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    return folder


def tiny_config(model, data, out, **overrides):
    cfg = {"base_model": str(model), "train_data_dir": str(data), "output_dir": str(out), "output_name": "tiny",
           "resolution": 64, "batch_size": 2, "lora_rank": 4, "learning_rate": 1e-3, "max_train_steps": 6,
           "seed": 1234}
    cfg.update(overrides)
    return cfg


def pixels_equal(a, b):
    return np.array_equal(np.asarray(a), np.asarray(b))
