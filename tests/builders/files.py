"""A corpus of broken and odd image files, generated at test time (nothing binary is checked in).

`write_corpus(folder)` writes every case into `folder` and returns the cases; each says what the
decoder must report (reason, format, notes, words of the message) and, for usable images, how to
get the reference pixels from Pillow. `seed_files()` gives the byte-only cases for fuzz seeds.
"""
import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import numpy as np
from PIL import Image, ImageOps


# ---------------------------------------------------------------- pixel sources


def gradient(w, h, seed=0):
    """A smooth colour picture with a little noise: not symmetric, so flips and turns show."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(w - 1, 1)).astype(np.int32)
    g = (y * 255 // max(h - 1, 1)).astype(np.int32)
    b = ((x + 2 * y) * 3 % 256).astype(np.int32)
    img = np.stack([r, g, b], axis=-1) + rng.randint(-8, 9, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def rgb_image(w=48, h=32, seed=0):
    return Image.fromarray(gradient(w, h, seed), "RGB")


def rgba_image(w=48, h=32, seed=1):
    rgb = gradient(w, h, seed)
    alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    alpha[0, 0], alpha[0, 1], alpha[0, 2] = 0, 128, 255
    rgb[0, 1] = (255, 0, 0)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def encode(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- hand-made containers


def png_chunk(kind, payload):
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png_bytes(width, height, color_type, bit_depth, rows, extra=()):
    """A PNG from raw sample rows (bytes per row, filter type 0 added here)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + b"".join(extra) +
            png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def png16(arr):
    """16-bit PNG (gray, or RGB/RGBA) from a uint16 array, big-endian samples."""
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    color = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    be = arr.astype(">u2").reshape(h, -1)
    return png_bytes(w, h, color, 16, [be[y].tobytes() for y in range(h)])


def exif_block(orientation, big_endian):
    """TIFF-structured EXIF with one IFD0 entry: Orientation (0x0112, SHORT, count 1)."""
    e = ">" if big_endian else "<"
    head = (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(e + "I", 8)
    entry = struct.pack(e + "HHI", 0x0112, 3, 1) + struct.pack(e + "H", orientation) + b"\x00\x00"
    return head + struct.pack(e + "H", 1) + entry + struct.pack(e + "I", 0)


def jpeg_with_exif(jpeg, orientation, big_endian):
    payload = b"Exif\x00\x00" + exif_block(orientation, big_endian)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]


def jpeg_set_size(jpeg, width, height):
    """Patch the frame header (SOF0/SOF2) to claim another size."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = jpeg.find(marker)
        if i > 0:
            return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]
    raise ValueError("no SOF marker")


def jpeg_scan_start(jpeg):
    """Offset of the first byte of entropy-coded data (after the SOS segment)."""
    i = jpeg.find(b"\xff\xda")
    return i + 2 + struct.unpack(">H", jpeg[i + 2:i + 4])[0]


def bmp_rgba_v4(im):
    """32-bit BITFIELDS BMP with a BITMAPV4HEADER and an alpha mask (Pillow cannot write one)."""
    w, h = im.size
    a = np.asarray(im.convert("RGBA"))[::-1]  # bottom-up rows
    pixels = a[..., [2, 1, 0, 3]].tobytes()   # B, G, R, A in memory = masks below, little-endian
    header = struct.pack("<IiiHHIIiiII", 108, w, h, 1, 32, 3, len(pixels), 2835, 2835, 0, 0)
    header += struct.pack("<IIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000)
    header += b"BGRs" + b"\x00" * 36 + b"\x00" * 12
    offset = 14 + len(header)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + header + pixels


def bmp_rle8():
    """A 4x2 RLE8 BMP (a run-length BMP: Pillow reads these, stb_image does not)."""
    palette = b"".join(struct.pack("<BBBB", i, i, i, 0) for i in range(256))
    data = b"\x04\x10\x00\x00" + b"\x04\x80\x00\x01"  # run of 4 x index 16, EOL, run of 4 x 128, EOB
    header = struct.pack("<IiiHHIIiiII", 40, 4, 2, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    offset = 14 + len(header) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + header + palette + data


# ---------------------------------------------------------------- references


def composite_on_white(rgba):
    """The documented compositing rule: (c*a + 255*(255-a) + 127) // 255."""
    a = rgba.astype(np.uint32)
    alpha = a[..., 3:4]
    return ((a[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def pillow_rgb(data, orient=True):
    """What Pillow makes of the file, in our output layout (first frame, RGB, alpha on white)."""
    im = Image.open(io.BytesIO(data))
    im.seek(0)
    im.load()
    if orient:
        im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        return composite_on_white(np.asarray(im.convert("RGBA")))
    return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------- the corpus


@dataclass
class Case:
    name: Union[str, bytes]
    data: Optional[bytes]
    reason: str
    format: str
    notes: frozenset = frozenset()
    message: tuple = ()               # words the message must contain (lower-case)
    reference: Optional[Callable] = None  # () -> expected HxWx3 pixels
    exact: bool = True                # pixels must equal the reference exactly
    kind: str = "file"                # file | symlink | dir
    size: Optional[tuple] = None      # expected (width, height) as stored
    extra: dict = field(default_factory=dict)

    @property
    def ok(self):
        return self.reason == "ok"


def _ref(data, **kw):
    return lambda: pillow_rgb(data, **kw)


def build_cases():
    cases = []

    def add(*a, **kw):
        cases.append(Case(*a, **kw))

    photo = rgb_image(64, 48, seed=3)
    jpeg = encode(photo, "JPEG", quality=90)
    png = encode(rgb_image(), "PNG")

    # -- the broken and the odd
    add("empty.png", b"", "empty_file", "unknown", message=("empty",))
    cut = jpeg_scan_start(jpeg) + (len(jpeg) - jpeg_scan_start(jpeg)) // 2
    add("truncated.jpg", jpeg[:cut], "truncated", "jpeg", message=("end-of-image",))
    add("truncated.png", png[:-12], "truncated", "png", message=("iend",))
    add("truncated_idat.png", png[: len(png) // 2], "truncated", "png", message=("idat",))
    idat = png.find(b"IDAT") + 4
    flipped = bytearray(png)
    flipped[idat + 10] ^= 0x40
    add("bad_crc.png", bytes(flipped), "corrupt", "png", message=("idat", "crc"))
    add("page.png", b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not found</body></html>\n",
        "not_an_image", "text", message=("html", "web page"))
    add("notes.jpg", b"shopping list:\n- milk\n- eggs\n", "not_an_image", "text", message=("plain text",))
    add("response.png", b'{"error": "rate limited", "retry_after": 30}', "not_an_image", "text",
        message=("json",))
    add("lfs.png", b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 12345\n",
        "not_an_image", "text", message=("lfs",))
    add("zeros.png", bytes(4096), "not_an_image", "unknown", message=("zero",))
    add("noise.bin.png", bytes(np.random.RandomState(5).randint(0, 256, 600, dtype=np.uint8)) + b"\x00",
        "not_an_image", "unknown", message=("unknown data",))
    add("really_png.jpg", png, "ok", "png", frozenset({"wrong_extension"}), reference=_ref(png))
    bomb_png = png_bytes(10000, 10000, 2, 8, [b"\x00" * 3])  # IDAT far too short: never read
    add("bomb.png", bomb_png, "too_large", "png", message=("10000x10000", "limit"), size=(10000, 10000))
    add("bomb.jpg", jpeg_set_size(jpeg, 10000, 10000), "too_large", "jpeg", message=("10000x10000",),
        size=(10000, 10000))
    add("broken_link.png", None, "unreadable", "unknown", kind="symlink", message=("symbolic link",))
    add("x.png", None, "unreadable", "unknown", kind="dir", message=("directory",))
    add("image.tiff", encode(rgb_image(), "TIFF"), "unsupported_format", "other", message=("tiff",))
    add("photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "unsupported_format",
        "other", message=("heic",))
    add("scan.pdf.png", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "unsupported_format", "other",
        message=("pdf", "named .png"))
    add("archive.zip", b"PK\x03\x04" + bytes(40), "unsupported_format", "other", message=("zip",))
    add("rle8.bmp", bmp_rle8(), "unsupported_format", "bmp", message=("rle8",))
    gif = encode(rgb_image(), "GIF")
    add("truncated.gif", gif[: len(gif) // 2], "truncated", "gif", message=("first frame",))
    webp = encode(rgb_image(), "WEBP", quality=80)
    add("truncated.webp", webp[: len(webp) - 20], "truncated", "webp", message=("riff",))
    damaged = bytearray(jpeg[: jpeg_scan_start(jpeg) + 200]) + b"\xff\xd9"
    add("damaged_scan.jpg", bytes(damaged), "ok", "jpeg", frozenset({"decoder_warning"}))

    # -- usable files that need care
    add(b"caf\xe9.png", png, "ok", "png", reference=_ref(png))
    cmyk = Image.fromarray(np.dstack([gradient(40, 24, 7), gradient(40, 24, 8)[..., :1]]), "CMYK")
    cmyk_jpeg = encode(cmyk, "JPEG", quality=92)
    add("cmyk.jpg", cmyk_jpeg, "ok", "jpeg", frozenset({"cmyk"}), reference=_ref(cmyk_jpeg))
    rng = np.random.RandomState(11)
    rgb16 = rng.randint(0, 65536, size=(20, 30, 3)).astype(np.uint16)
    add("rgb16.png", png16(rgb16), "ok", "png", frozenset({"16bit"}), reference=lambda: (rgb16 >> 8).astype(np.uint8))
    gray16 = rng.randint(0, 65536, size=(20, 30)).astype(np.uint16)
    # Pillow opens this as I;16 and convert("RGB") clips at 255 (all white); we keep the high byte.
    add("gray16.png", png16(gray16), "ok", "png", frozenset({"16bit"}),
        reference=lambda: np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, axis=2))
    rgba16 = rng.randint(0, 65536, size=(10, 12, 4)).astype(np.uint16)
    add("rgba16.png", png16(rgba16), "ok", "png", frozenset({"16bit", "alpha"}),
        reference=lambda: composite_on_white((rgba16 >> 8).astype(np.uint8)))
    la = Image.fromarray(np.dstack([gradient(30, 20, 2)[..., 0], np.tile(np.arange(0, 240, 8, dtype=np.uint8), (20, 1))]),
                         "LA")
    la_png = encode(la, "PNG")
    add("gray_alpha.png", la_png, "ok", "png", frozenset({"alpha"}), reference=_ref(la_png))
    rgba_png = encode(rgba_image(), "PNG")
    add("rgba.png", rgba_png, "ok", "png", frozenset({"alpha"}), reference=_ref(rgba_png),
        extra={"pixels": {(0, 0): (255, 255, 255), (0, 1): (255, 127, 127)}})
    opaque_rgba = encode(Image.fromarray(np.dstack([gradient(16, 16), np.full((16, 16), 255, np.uint8)]), "RGBA"),
                         "PNG")
    add("opaque_rgba.png", opaque_rgba, "ok", "png", reference=_ref(opaque_rgba), extra={"no_alpha_note": True})
    pal = rgb_image(32, 24, seed=4).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal_png = encode(pal, "PNG", transparency=3)
    add("palette_trns.png", pal_png, "ok", "png", frozenset({"alpha"}), reference=_ref(pal_png))
    frames = [rgb_image(40, 30, seed=s) for s in (20, 21, 22)]
    agif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    add("animated.gif", agif, "ok", "gif", frozenset({"animated"}), reference=_ref(agif), extra={"frames": 3})
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)
    add("animated.png", apng, "ok", "png", frozenset({"animated"}), reference=_ref(apng), extra={"frames": 3})
    awebp = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    add("animated.webp", awebp, "ok", "webp", frozenset({"animated"}), reference=_ref(awebp), extra={"frames": 3})
    one = encode(Image.new("RGB", (1, 1), (12, 34, 56)), "PNG")
    add("one_pixel.png", one, "ok", "png", reference=_ref(one), size=(1, 1))
    bmp = encode(rgb_image(37, 21, seed=5), "BMP")
    add("image.bmp", bmp, "ok", "bmp", reference=_ref(bmp), size=(37, 21))
    bmp_a = bmp_rgba_v4(rgba_image(20, 10))
    add("rgba_v4.bmp", bmp_a, "ok", "bmp", frozenset({"alpha"}), reference=_ref(bmp_a))
    tga = encode(rgb_image(33, 17, seed=6), "TGA")
    add("image.tga", tga, "ok", "tga", reference=_ref(tga), size=(33, 17))
    tga_rle = encode(rgba_image(33, 17, seed=6), "TGA", compression="tga_rle")
    add("rle_rgba.tga", tga_rle, "ok", "tga", frozenset({"alpha"}), reference=_ref(tga_rle))
    lossy = encode(rgb_image(50, 30, seed=9), "WEBP", quality=80)
    add("lossy.webp", lossy, "ok", "webp", reference=_ref(lossy), exact=False)
    lossless = encode(rgb_image(50, 30, seed=9), "WEBP", lossless=True)
    add("lossless.webp", lossless, "ok", "webp", reference=_ref(lossless))
    lossless_a = encode(rgba_image(50, 30), "WEBP", lossless=True, exact=True)
    add("lossless_alpha.webp", lossless_a, "ok", "webp", frozenset({"alpha"}), reference=_ref(lossless_a))
    add("baseline.jpg", jpeg, "ok", "jpeg", reference=_ref(jpeg), size=(64, 48))
    gray_jpeg = encode(rgb_image(40, 30).convert("L"), "JPEG", quality=90)
    add("gray.jpg", gray_jpeg, "ok", "jpeg", reference=_ref(gray_jpeg))
    prog = encode(rgb_image(80, 60, seed=10), "JPEG", quality=85, progressive=True)
    add("progressive.jpg", prog, "ok", "jpeg", reference=_ref(prog))
    sub444 = encode(rgb_image(41, 27, seed=12), "JPEG", quality=90, subsampling=0)
    add("subsampling444.jpg", sub444, "ok", "jpeg", reference=_ref(sub444))
    add("trailing.jpg", jpeg + b"\x00garbage after the end marker", "ok", "jpeg", frozenset({"trailing_data"}),
        reference=_ref(jpeg))
    base = encode(rgb_image(48, 32, seed=13), "JPEG", quality=95)
    for o in range(1, 9):
        data = jpeg_with_exif(base, o, big_endian=bool(o % 2))
        notes = frozenset({"exif_orientation"}) if o > 1 else frozenset()
        add("orient_%d.jpg" % o, data, "ok", "jpeg", notes, reference=_ref(data), size=(48, 32),
            extra={"orientation": o})
    png_exif = encode(rgb_image(30, 20, seed=14), "PNG", exif=b"Exif\x00\x00" + exif_block(6, False))
    add("orient_6.png", png_exif, "ok", "png", frozenset({"exif_orientation"}), reference=_ref(png_exif),
        extra={"orientation": 6})
    webp_exif = encode(rgb_image(30, 20, seed=15), "WEBP", lossless=True,
                       exif=b"Exif\x00\x00" + exif_block(3, True))
    add("orient_3.webp", webp_exif, "ok", "webp", frozenset({"exif_orientation"}), reference=_ref(webp_exif),
        extra={"orientation": 3})
    pal4 = rgb_image(21, 13, seed=16).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal4_png = encode(pal4, "PNG", bits=4)
    add("palette_4bit.png", pal4_png, "ok", "png", reference=_ref(pal4_png))
    bilevel = encode(rgb_image(19, 11, seed=17).convert("1"), "PNG")
    add("bilevel.png", bilevel, "ok", "png", reference=_ref(bilevel))
    tgif = encode(pal, "GIF", transparency=3)
    add("transparent.gif", tgif, "ok", "gif", frozenset({"alpha"}), reference=_ref(tgif))
    return cases


def write_corpus(folder):
    """Writes every case into folder; returns the cases with .path set (bytes, os.fsencode'd)."""
    folder = os.fsencode(folder)
    cases = build_cases()
    for c in cases:
        c.path = os.path.join(folder, os.fsencode(c.name))
        if c.kind == "symlink":
            os.symlink(os.path.join(folder, b"does-not-exist.png"), c.path)
        elif c.kind == "dir":
            os.mkdir(c.path)
        else:
            with open(c.path, "wb") as f:
                f.write(c.data)
    return cases


def seed_files():
    """(file name, bytes) for every case that is plain bytes: fuzzing seeds."""
    out = []
    for c in build_cases():
        if c.kind == "file" and c.data:
            name = c.name if isinstance(c.name, str) else os.fsdecode(c.name)
            out.append((name, c.data))
    return out


def jpeg_segments(jpeg):
    """(marker, start, end) of each header segment before the first scan."""
    out, pos = [], 2
    while pos < len(jpeg) and jpeg[pos] == 0xFF:
        marker = jpeg[pos + 1]
        end = pos + 2 + struct.unpack(">H", jpeg[pos + 2:pos + 4])[0]
        out.append((marker, pos, end))
        if marker == 0xDA:
            break
        pos = end
    return out


def jpeg_without_huffman_tables(jpeg):
    """Drop every DHT segment: a Motion-JPEG style frame that relies on the standard tables."""
    for marker, start, end in reversed(jpeg_segments(jpeg)):
        if marker == 0xC4:
            jpeg = jpeg[:start] + jpeg[end:]
    return jpeg


def jpeg_with_overfull_huffman_table(jpeg):
    """A DHT table whose 16 code counts add up to more than 256 symbols."""
    for marker, start, end in jpeg_segments(jpeg):
        if marker == 0xC4:
            counts = bytes([0, 0, 0, 0, 0, 0, 0, 0, 200, 200, 0, 0, 0, 0, 0, 0])
            body = b"\x10" + counts + bytes(400)
            seg = b"\xff\xc4" + struct.pack(">H", len(body) + 2) + body
            return jpeg[:start] + seg + jpeg[start:]
    raise ValueError("no DHT")
