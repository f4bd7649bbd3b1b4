"""Captions: `metadata.csv` (filename,prompt) and per-image caption files (`.txt`)."""
import csv
import io
import os

from .errors import DatasetError
from .fsutil import display_path

# Header names accepted for the two columns (lora-scripts' filename,prompt first; the
# Hugging Face imagefolder names and common variants after).
FILENAME_COLUMNS = ("filename", "file_name", "file", "image", "path")
CAPTION_COLUMNS = ("prompt", "text", "caption", "tags")
# Caption file extensions users mix up; we warn when the configured one is missing but one of these exists.
OTHER_CAPTION_EXTENSIONS = (".txt", ".caption", ".tags", ".cap")


def read_metadata_csv(path):
    """Read `metadata.csv` -> {relative filename: caption}. Errors name the file and line."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DatasetError("cannot read %s: %s" % (display_path(path), e.strerror), path) from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DatasetError("%s:%d: not UTF-8 text (save it as UTF-8)" % (display_path(path), line), path) from e
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return {}
    lowered = [h.strip().lower() for h in header]
    try:
        fcol = next(lowered.index(c) for c in FILENAME_COLUMNS if c in lowered)
        ccol = next(lowered.index(c) for c in CAPTION_COLUMNS if c in lowered)
    except StopIteration:
        raise DatasetError(
            "%s:1: header must name a file column and a caption column, e.g. 'filename,prompt' (got %s)"
            % (display_path(path), ",".join(header)), path) from None
    captions = {}
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(fcol, ccol):
            raise DatasetError("%s:%d: expected %d columns, got %d"
                               % (display_path(path), reader.line_num, len(header), len(row)), path)
        name = row[fcol].strip().replace("\\", "/")
        if name:
            captions[os.path.normpath(name)] = row[ccol].strip()
    return captions


def format_metadata_csv(rows):
    """rows: iterable of (filename, prompt) -> CSV text with the `filename,prompt` header."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["filename", "prompt"])
    for name, prompt in rows:
        writer.writerow([name, prompt])
    return out.getvalue()


def read_caption_file(path):
    """A caption file's text (UTF-8, BOM tolerated, lines joined), or None when absent."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DatasetError("cannot read caption %s: %s" % (display_path(path), e.strerror), path) from e
    text = raw.decode("utf-8-sig", "replace")
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def with_trigger(caption, trigger):
    """Prepend the trigger word(s) the way kohya users write them: 'sks, caption'."""
    caption = (caption or "").strip()
    if not trigger:
        return caption
    trigger = trigger.strip()
    head = [t.strip() for t in caption.split(",")][: len(trigger.split(","))]
    if head == [t.strip() for t in trigger.split(",")]:
        return caption  # already starts with the trigger (which may hold commas: "sks, woman")
    return trigger + (", " + caption if caption else "")
