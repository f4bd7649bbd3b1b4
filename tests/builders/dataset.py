"""A messy image folder, as users bring them, with the outcome `clean` must reach for each file."""
import io
import os
import shutil

import numpy as np
from PIL import Image


def textured(seed, size, hue=(200, 120, 60)):
    """A sharp, colourful picture: shapes over graded colour with fine grain."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.empty((h, w, 3))
    for c in range(3):
        base[..., c] = hue[c] * (0.5 + 0.5 * np.sin(xx / (23 + 7 * c + seed % 5) + yy / (31 + seed % 7)))
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.2) * min(w, h)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        base[mask] = rng.uniform(0, 255, size=3)
    base += rng.normal(0, 6, size=base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def _save(path, array, fmt="PNG", **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kw)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return buf.getvalue()


def make_messy_folder(root):
    """Write the folder; returns {relative path: (expected status, expected reason or None)}."""
    os.makedirs(root, exist_ok=True)
    expect = {}

    def good(name, seed, size=(640, 640), fmt="PNG", caption=None, **kw):
        _save(os.path.join(root, name), textured(seed, size), fmt, **kw)
        if caption is not None:
            with open(os.path.join(root, os.path.splitext(name)[0] + ".txt"), "w") as f:
                f.write(caption + "\n")
        expect[name] = ("kept", None)

    good("a_red.png", 1, caption="a red picture")
    good("b_blue.jpg", 2, (800, 600), "JPEG", caption="a blue picture", quality=92)
    good("c_wide.png", 3, (900, 600))
    good("10_style/d_sub.png", 4, (600, 700), caption="in a kohya folder")
    good("e_tall.webp", 5, (600, 900), "WEBP", lossless=True)
    good("f_listed.png", 6)  # caption from metadata.csv
    with open(os.path.join(root, "metadata.csv"), "w") as f:
        f.write("filename,prompt\nf_listed.png,\"from the csv, with a comma\"\n")
    good("g_other_caption.png", 7)
    with open(os.path.join(root, "g_other_caption.caption"), "w") as f:
        f.write("a caption in the wrong extension\n")

    # exact copy of a_red (kept: a_red, first by name among equals)
    shutil.copyfile(os.path.join(root, "a_red.png"), os.path.join(root, "z_copy_of_red.png"))
    expect["z_copy_of_red.png"] = ("duplicate", "exact")
    # near duplicate of b_blue: brightened, re-encoded smaller (b_blue is larger: kept)
    arr = np.asarray(Image.open(os.path.join(root, "b_blue.jpg")).convert("RGB"))
    near = np.clip(arr.astype(np.int16) + 5, 0, 255).astype(np.uint8)
    _save(os.path.join(root, "y_blue_edit.jpg"), np.asarray(Image.fromarray(near).resize((720, 540))), "JPEG",
          quality=85)
    expect["y_blue_edit.jpg"] = ("duplicate", "near")

    # quality rejects
    yy, xx = np.mgrid[0:640, 0:640]
    smooth = np.stack([xx * 0.3, yy * 0.3, (xx + yy) * 0.15], -1).astype(np.uint8)
    _save(os.path.join(root, "q_blurry.png"), smooth)
    expect["q_blurry.png"] = ("rejected", "blurry")
    _save(os.path.join(root, "q_tiny.png"), textured(8, (120, 100)))
    expect["q_tiny.png"] = ("rejected", "too_small")
    dark = (textured(9, (640, 640)) // 16)
    _save(os.path.join(root, "q_dark.png"), dark)
    expect["q_dark.png"] = ("rejected", "too_dark")
    _save(os.path.join(root, "q_blank.png"), np.full((640, 640, 3), 255, np.uint8))
    expect["q_blank.png"] = ("rejected", "too_bright")  # among others: blurry, low_information
    _save(os.path.join(root, "q_strip.png"), textured(10, (2000, 520)))
    expect["q_strip.png"] = ("rejected", "odd_aspect")

    # broken files
    open(os.path.join(root, "x_empty.png"), "wb").close()
    expect["x_empty.png"] = ("rejected", "empty_file")
    data = _save(os.path.join(root, "x_cut.jpg"), textured(11, (640, 640)), "JPEG")
    with open(os.path.join(root, "x_cut.jpg"), "wb") as f:
        f.write(data[: len(data) // 2])
    expect["x_cut.jpg"] = ("rejected", "truncated")
    with open(os.path.join(root, "x_page.png"), "w") as f:
        f.write("<!DOCTYPE html><html><body>403 Forbidden</body></html>\n")
    expect["x_page.png"] = ("rejected", "not_an_image")
    os.symlink("does-not-exist.png", os.path.join(root, "x_dangling.png"))
    expect["x_dangling.png"] = ("rejected", "unreadable")

    # usable, with notes
    _save(os.path.join(root, "n_really_png.jpg"), textured(12, (640, 640)))
    expect["n_really_png.jpg"] = ("kept", "wrong_extension")
    raw_name = os.path.join(os.fsencode(root), b"n_caf\xe9.png")
    with open(raw_name, "wb") as f:
        f.write(_save(os.path.join(root, "tmp.png"), textured(13, (640, 640))))
    os.unlink(os.path.join(root, "tmp.png"))
    expect[os.fsdecode(b"n_caf\xe9.png")] = ("kept", "non_utf8_name")

    with open(os.path.join(root, "notes.md"), "w") as f:
        f.write("not an image, skipped\n")
    return expect


def tree_checksums(root):
    """{relative path: sha256} of every file (links as their target text), to prove SRC is untouched."""
    import hashlib
    sums = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                sums[rel] = "link:" + os.readlink(path)
            else:
                with open(path, "rb") as f:
                    sums[rel] = hashlib.sha256(f.read()).hexdigest()
            sums[rel] += ":%o" % os.lstat(path).st_mode
    return sums
