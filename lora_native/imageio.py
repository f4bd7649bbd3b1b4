"""Decoding images with file checks: every file gives a result, never an exception.

A broken or odd file comes back with `pixels=None`, a `reason` name and a human `message`;
a usable one with an HxWx3 uint8 RGB array (alpha composited on white, grayscale expanded,
16-bit reduced, EXIF orientation applied) and `notes` the user may want to know about.

    >>> from lora_native import imageio
    >>> r = imageio.decode_file("photo.jpg")
    >>> r.ok, r.reason, r.message, r.notes
"""
import os
from dataclasses import dataclass
from typing import Optional, Tuple

from . import _native

#: Why a file cannot be used (exactly one per file), with a line for reports.
REASONS = {
    "ok": "decoded",
    "empty_file": "the file has zero bytes",
    "unreadable": "the file could not be opened or read (missing, a directory, no permission, a broken link)",
    "not_an_image": "the bytes are text, HTML, JSON or unknown data, not an image",
    "unsupported_format": "a recognised format lora-native does not decode (TIFF, HEIC/AVIF, PSD, PDF, ZIP, ...)",
    "truncated": "the data ends early (JPEG without its end marker, PNG without IEND, ...): the file was cut short",
    "corrupt": "the structure or the compressed data is damaged (bad CRC, broken segments, decoder failure)",
    "too_large": "the header claims more pixels than max_pixels (a decompression bomb or a huge scan)",
}

#: Things worth knowing about a usable image, with a line for reports.
NOTES = {
    "wrong_extension": "the content is another format than the file name says (decoded by content)",
    "animated": "an animation: the first frame was used",
    "cmyk": "a CMYK/YCCK JPEG, converted to RGB",
    "16bit": "16-bit samples, reduced to 8 bits",
    "alpha": "transparent pixels, composited on white",
    "exif_orientation": "the EXIF orientation tag was applied (the picture was turned or flipped)",
    "trailing_data": "bytes after the image's end marker were ignored",
    "decoder_warning": "the decoder recovered from damaged data; the picture may show glitches",
}


@dataclass(frozen=True)
class DecodedImage:
    """The result of decoding one file or buffer."""

    pixels: Optional[object]  # numpy.ndarray HxWx3 uint8, or None
    format: str               # sniffed from the bytes: jpeg, png, gif, bmp, tga, webp, text, other, unknown
    reason: str               # a key of REASONS
    message: str              # human message for the reason ("" when ok)
    notes: Tuple[str, ...]    # keys of NOTES
    width: int                # as stored, before EXIF orientation; 0 when unknown
    height: int
    channels: int             # in the file: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA/CMYK
    bit_depth: int
    frames: int
    orientation: int          # EXIF orientation 1..8
    path: Optional[str] = None

    @property
    def ok(self):
        return self.reason == "ok"

    def describe(self):
        """One line for a report: 'path: reason: message [notes]'."""
        head = "%s: " % self.path if self.path is not None else ""
        if not self.ok:
            return "%s%s: %s" % (head, self.reason, self.message)
        notes = " [%s]" % ", ".join(self.notes) if self.notes else ""
        return "%s%s %dx%d%s" % (head, self.format, self.width, self.height, notes)


def _result(pair, path=None):
    pixels, info = pair
    return DecodedImage(pixels=pixels, format=info["format"], reason=info["reason"], message=info["message"],
                        notes=tuple(info["notes"]), width=info["width"], height=info["height"],
                        channels=info["channels"], bit_depth=info["bit_depth"], frames=info["frames"],
                        orientation=info["orientation"], path=path)


def _display(path):
    return os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else path


def decode(data, **opts):
    """Decode image bytes. Options: ext, max_pixels, jpeg_decoder ('libjpeg' | 'stb'),
    jpeg_draft_min_side, apply_orientation, header_only."""
    return _result(_native.decode(data, **opts))


def decode_file(path, **opts):
    """Decode one file (str, bytes or os.PathLike); same options as decode()."""
    return _result(_native.decode_file(path, **opts), _display(path))


def decode_files(paths, threads=None, **opts):
    """Decode many files on native threads (GIL released); results in the order of paths."""
    paths = list(paths)
    return [_result(pair, _display(p)) for pair, p in zip(_native.decode_files(paths, threads, **opts), paths)]


__all__ = ["REASONS", "NOTES", "DecodedImage", "decode", "decode_file", "decode_files"]
