"""Auto-captioning (`lora-native caption`, `tools/auto_label.py`): BLIP sentences, WD14 tags or
CLIP interrogation, from a local model, into `metadata.csv` or `.txt` files beside the images.

    from lora_native.caption import caption
    report = caption("data/style_train", captioner="wd14", model="models/wd-v1-4-moat-tagger-v2")
    print(report.summary())

Pixels come from the C core (`_native.prepare_images`, one batch prepared ahead on a thread:
lora_native.caption.batches); the model runs in torch (BLIP, CLIP) or onnxruntime (WD14).
Where models come from: lora_native.caption.models (never downloaded).

Writing rules:
- csv (the default; `output` ending in .csv, default `<folder>/metadata.csv`): `filename,prompt`
  rows, file names relative to `folder`. An existing file keeps its rows and their order; captions
  of new images are appended in name order; a row with an empty prompt is filled in place. The file
  is rewritten with the `filename,prompt` header (other header names are read, not kept).
- txt (`format="txt"`, or `output` naming a folder): one `<image stem>.txt` per image beside the
  image (kohya's layout), or at the same relative place under `output`.
- An existing caption (a non-empty row of that metadata.csv, or a non-empty .txt) is never
  replaced unless overwrite=True. Every file is written atomically (temp file + rename); .txt files
  as each batch is done, metadata.csv at the end (also when interrupted, with what was done).
- The report (CaptionReport: .summary(), .to_json()) is returned; the command line prints it and
  writes JSON only where `--report PATH` says: nothing like caption_report.json is dropped among
  the user's images or next to their metadata.csv.
- The caption written is `trigger, prefix caption`: the trigger word(s) as training prepends them
  (lora_native.captions.with_trigger); prefix before the model's text, joined with ", " for tag
  captioners (wd14, clip) and a space for BLIP.
"""
import os
import re
import time

from . import batches, models
from .report import CaptionReport, folder_tag_frequency
from ..captions import format_metadata_csv, read_caption_file, read_metadata_csv, with_trigger
from ..errors import DatasetError, UsageError
from ..fsutil import atomic_write_text, display_path, is_valid_utf8

CAPTIONERS = ("blip", "wd14", "clip")
MAX_PIXELS = 8192 * 8192  # as `lora-native clean` (decompression bombs are refused)


def captioner_module(name):
    """The module of a captioner: lora_native.caption.blip / wd14 / clip."""
    if name not in CAPTIONERS:
        raise UsageError("captioner must be one of %s, got %r" % (", ".join(CAPTIONERS), name))
    import importlib
    return importlib.import_module("%s.%s" % (__name__, name))


def _plan_output(folder, format, output):
    """-> (format, output path): metadata.csv path, or the folder .txt files go under."""
    if format not in (None, "csv", "txt"):
        raise UsageError("format must be csv or txt, got %r" % (format,))
    if output is None:
        return (format or "csv"), (os.path.join(folder, "metadata.csv") if format != "txt" else folder)
    output = os.path.abspath(os.path.expanduser(os.fspath(output)))
    names_csv = output.lower().endswith(".csv")
    if names_csv:
        if format == "txt":
            raise UsageError("output %s is a .csv file, but the format is txt (give a folder for .txt files)"
                             % display_path(output))
        if os.path.isdir(output):
            raise UsageError("output %s is a folder" % display_path(output))
        return "csv", output
    if format == "csv":
        if os.path.exists(output) and not os.path.isdir(output):
            raise UsageError("output %s is not a .csv file or a folder" % display_path(output))
        return "csv", os.path.join(output, "metadata.csv")
    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError("output %s must end in .csv (metadata.csv) or be a folder (for .txt files)"
                         % display_path(output))
    return "txt", output


def _join(prefix, text, style):
    prefix = (prefix or "").strip()
    if not prefix:
        return text
    if not text:
        return prefix
    if style == "sentence":
        return prefix + " " + text
    return prefix.rstrip(",").rstrip() + ", " + text


def caption(folder, captioner=None, model=None, format=None, output=None, trigger="", prefix="", overwrite=False,
            batch_size=8, threads=0, device=None, progress=None, config=None, search_dirs=(), dtype=None,
            prefetch=None, **captioner_options):
    """Caption the images of `folder` (recursively, found as `lora-native clean` finds them) ->
    CaptionReport.

    captioner: blip | wd14 | clip (default: the config's `captioner`, else blip). model: a local
    folder or file; else LORA_NATIVE_<NAME>_MODEL, the config's `caption_model`, the hosts'
    `search_dirs` (`<dir>/captioners/<name>/`): see lora_native.caption.models. config: a training
    YAML path (its captioner / caption_model keys) or a dict of them. format: csv | txt (None:
    csv unless `output` names a folder); output: see the module docstring. batch_size images go
    to the model at once; threads: preparing threads (0: all cores, or a quarter of them while a
    model on the CPU runs beside the prefetch thread: batches.default_threads); device: cpu | cuda (None:
    CUDA when available); dtype: torch dtype for BLIP/CLIP (default fp16 on CUDA, fp32 on CPU);
    progress(stage, done, total) with stage "caption"; prefetch: batches prepared ahead on a thread
    (0: none; None: one, except for BLIP/CLIP on the CPU: batches.default_depth).
    captioner_options: blip max_new_tokens (30), num_beams (3), prompt; wd14 general_threshold
    (0.35), character_threshold (0.85), exclude_tags, include_ratings (False); clip phrases (a
    file or folder of lists)."""
    started = time.time()
    folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    if not os.path.isdir(folder):
        raise DatasetError("image folder %s does not exist" % display_path(folder), folder)
    if captioner is None:
        captioner = models.read_config_keys(config)[0] or "blip"
    module = captioner_module(captioner)
    unknown = sorted(set(captioner_options) - set(module.OPTIONS))
    if unknown:
        raise UsageError("%s takes no option %s (its options: %s)" % (module.TITLE, ", ".join(unknown),
                                                                       ", ".join(module.OPTIONS)))
    if int(batch_size) < 1:
        raise UsageError("batch_size must be at least 1, got %r" % (batch_size,))
    if not 0 <= int(threads) <= 1024:
        raise UsageError("threads must be between 0 (all cores) and 1024, got %r" % (threads,))
    format, output = _plan_output(folder, format, output)
    model_path, _ = models.resolve_model(module, model=model, config=config, search_dirs=search_dirs)

    from ..dataset import list_images
    exclude = output if format == "txt" and output != folder else None
    rels, _ = list_images(folder, exclude=exclude)
    report = CaptionReport(folder=folder, output=output, format=format, captioner=captioner, model=model_path,
                           style=module.STYLE)
    if not rels:
        report.warnings.append("no images found in %s" % display_path(folder))

    # what is captioned already
    existing_rows = {}
    if format == "csv" and os.path.isfile(output):
        existing_rows = read_metadata_csv(output)
    todo, final = [], {}
    txt_owner = {}
    for rel in rels:
        key = os.path.normpath(rel)
        if format == "csv":
            if not is_valid_utf8(rel):
                report.skipped.append((rel, "file name is not valid UTF-8, so metadata.csv cannot name it: rename "
                                            "it (or use --format txt)"))
                continue
            current = existing_rows.get(key, "")
        else:
            txt = _txt_path(output, rel)
            owner = txt_owner.setdefault(os.path.normcase(txt), rel)
            if owner != rel:
                report.skipped.append((rel, "shares its caption file %s with %s"
                                       % (display_path(os.path.relpath(txt, output)), display_path(owner))))
                continue
            current = read_caption_file(txt) or ""
        if current.strip() and not overwrite:
            report.existing.append(rel)
            final[key] = current
        else:
            todo.append(rel)

    captioner_obj = None
    done_csv = {}
    try:
        if todo:
            captioner_obj = module.load(model_path, device=device, dtype=dtype, **captioner_options)
            _run(captioner_obj, folder, output, format, todo, report, trigger, prefix, batch_size, threads,
                 progress, prefetch, done_csv)
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        if captioner_obj is not None:
            captioner_obj.close()
        if format == "csv" and done_csv:
            merged = dict(existing_rows)
            appended = sorted(k for k in done_csv if k not in merged)
            merged.update(done_csv)
            order = list(existing_rows) + appended
            os.makedirs(os.path.dirname(output), exist_ok=True)
            atomic_write_text(output, format_metadata_csv((k.replace(os.sep, "/"), merged[k]) for k in order))
            report.written.append(output)
        report.elapsed = time.time() - started

    for rel, text in report.captioned:
        final[os.path.normpath(rel)] = text
    report.tag_frequency = folder_tag_frequency(folder, final)
    return report


_REASON = re.compile(r"^([a-z][a-z0-9_]*): (.+)$", re.S)


def skip_reason(path, error):
    """prepare_images' "<path>: <code>: <message>" -> "<message> (<code>)", as `lora-native clean`
    prints a rejected file."""
    for prefix in (path + ": ", display_path(path) + ": "):
        if error.startswith(prefix):
            error = error[len(prefix):]
            break
    m = _REASON.match(error)
    return "%s (%s)" % (m.group(2), m.group(1)) if m else error


def _txt_path(output, rel):
    return os.path.join(output, os.path.splitext(rel)[0] + ".txt")


def _run(cap, folder, output, format, todo, report, trigger, prefix, batch_size, threads, progress, prefetch,
         done_csv):
    paths = [os.path.join(folder, rel) for rel in todo]
    done = 0
    if progress:
        progress("caption", 0, len(todo))
    if prefetch is None:
        prefetch = batches.default_depth(cap.on_cpu, cap.torch_model)
    threads = threads or batches.default_threads(cap.on_cpu, prefetch)
    for batch in batches.prepared_batches(paths, cap.prep, batch_size=batch_size, threads=threads,
                                          max_pixels=MAX_PIXELS, depth=prefetch):
        report.prep_seconds += batch.prep_seconds
        report.wait_seconds += batch.wait_seconds
        rels = todo[batch.start:batch.start + len(batch.items)]
        for i, error in enumerate(batch.errors):
            if error is not None:
                report.skipped.append((rels[i], skip_reason(batch.items[i], error)))
        if batch.ok:
            texts = cap.caption(batch.pixels[batch.ok] if len(batch.ok) < len(batch.items) else batch.pixels)
            for i, text in zip(batch.ok, texts):
                rel = rels[i]
                written = with_trigger(_join(prefix, text, cap.style), trigger)
                if format == "txt":
                    txt = _txt_path(output, rel)
                    os.makedirs(os.path.dirname(txt), exist_ok=True)
                    atomic_write_text(txt, written + "\n")
                    report.written.append(txt)
                else:
                    done_csv[os.path.normpath(rel)] = written
                report.generated[rel] = text
                report.captioned.append((rel, written))
        done += len(batch.items)
        if progress:
            progress("caption", done, len(todo))


__all__ = ["caption", "CAPTIONERS", "CaptionReport", "captioner_module"]
