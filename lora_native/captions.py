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


def read_captions(root, rels, caption_extension, warnings, metadata_path=None):
    """Captions of the images `rels` (paths relative to `root`) -> {rel: (caption, source)}.

    `metadata.csv` first (`metadata_path`, default `root/metadata.csv`; its file names are
    relative to `root`), then the caption file beside the image (`caption_extension`); source is
    "metadata.csv", the extension, or None when the image has no caption (caption ""). Problems
    that must not stop a run go to `warnings`: names in the CSV that are not images of the folder,
    an unreadable caption file, and images without a caption of the configured extension that have
    one of another (users lose hours to .caption vs .txt)."""
    from_csv = {}
    csv_path = metadata_path if metadata_path is not None else os.path.join(root, "metadata.csv")
    if os.path.isfile(csv_path):
        from_csv = read_metadata_csv(csv_path)
        known = {os.path.normpath(r) for r in rels}
        missing = [n for n in from_csv if n not in known]
        if missing:
            warnings.append("%s names %d file(s) that are not in the folder, e.g. %s"
                            % (os.path.basename(csv_path), len(missing), missing[0]))
    captions, other_ext = {}, {}
    for rel in rels:
        key = os.path.normpath(rel)
        if key in from_csv:
            captions[rel] = (from_csv[key], "metadata.csv")
            continue
        base = os.path.splitext(os.path.join(root, rel))[0]
        try:
            text = read_caption_file(base + caption_extension)
        except DatasetError as e:  # one unreadable caption must not stop the run
            warnings.append("%s; the image is used without a caption" % e)
            text = None
        if text is not None:
            captions[rel] = (text, caption_extension)
            continue
        for other in OTHER_CAPTION_EXTENSIONS:
            if other != caption_extension and os.path.isfile(base + other):
                other_ext.setdefault(other, []).append(rel)
        captions[rel] = ("", None)
    for other, found in sorted(other_ext.items()):
        warnings.append("%d image(s) have no %s caption but a %s file (e.g. %s): captions are read from %s files "
                        "(set the caption extension to %s to use them)"
                        % (len(found), caption_extension, other, display_path(os.path.splitext(found[0])[0] + other),
                           caption_extension, other))
    return captions
