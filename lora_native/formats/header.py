"""Read a .safetensors header (tensor names, dtypes, shapes, metadata) without loading a tensor.

Layout: 8 bytes little-endian header length N, then N bytes of JSON: {name: {"dtype", "shape",
"data_offsets"}, "__metadata__": {str: str}}. A 7 GB checkpoint is identified from a few
hundred kilobytes.
"""
import json
import os
import struct
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 100 * 1024 * 1024  # what the safetensors library itself accepts


class HeaderError(ValueError):
    """The file is not a readable safetensors file; the message says why."""


@dataclass
class SafetensorsHeader:
    path: str
    tensors: dict = field(default_factory=dict)   # name -> (dtype string, shape tuple)
    metadata: dict = field(default_factory=dict)

    def shape(self, name):
        entry = self.tensors.get(name)
        return None if entry is None else entry[1]


def read_header(path):
    """The header of a .safetensors file; HeaderError when the bytes are not one."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HeaderError("file too short to be safetensors (%d bytes)" % size)
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > MAX_HEADER_BYTES or n + 8 > size:
            raise HeaderError("not a safetensors file (header length %d does not fit a %d-byte file)" % (n, size))
        raw = f.read(n)
    if not raw.lstrip().startswith(b"{"):
        raise HeaderError("not a safetensors file (the header is not JSON)")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise HeaderError("not a safetensors file (unreadable header: %s)" % e) from None
    if not isinstance(obj, dict):
        raise HeaderError("not a safetensors file (the header is not a JSON object)")
    header = SafetensorsHeader(path)
    meta = obj.pop("__metadata__", None) or {}
    header.metadata = {str(k): v for k, v in meta.items()} if isinstance(meta, dict) else {}
    for name, info in obj.items():
        if not isinstance(info, dict) or "shape" not in info:
            raise HeaderError("not a safetensors file (entry %r has no shape)" % name)
        header.tensors[name] = (info.get("dtype"), tuple(int(x) for x in info["shape"]))
    return header
