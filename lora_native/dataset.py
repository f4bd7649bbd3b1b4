"""`lora-native clean`: turn a messy folder of images into a clean training set.

SRC is only read. DST receives the resized images, `metadata.csv` (filename,prompt),
`report.json` and `report.html`; every file is written atomically (temp + rename).
"""
import json
import os
import time
from dataclasses import dataclass, field, replace

import numpy as np

from . import _native
from .captions import OTHER_CAPTION_EXTENSIONS, format_metadata_csv, read_captions, with_trigger
from .dedup import group_near_duplicates, hamming
from .errors import DatasetError, UsageError
from .fsutil import atomic_write_text, display_path, is_valid_utf8
from .quality import QualityThresholds, evaluate
from .report import Item, Report, write_reports

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".gif", ".tga")
# Image files users drop in that we do not decode: listed so they are reported, not ignored.
OTHER_IMAGE_EXTENSIONS = (".tif", ".tiff", ".heic", ".heif", ".avif", ".psd", ".jxl", ".ico", ".svg", ".dng",
                          ".cr2", ".nef", ".arw", ".raw", ".exr", ".hdr")
MANIFEST_NAME = ".lora-native-clean.json"  # what this tool wrote into DST (so reruns replace only that)
CHUNK = 32  # files per native call: progress updates without starving the thread pool


@dataclass(frozen=True)
class CleanOptions:
    resolution: tuple = (512, 512)   # (width, height) of crops, or the bucket area
    bucket: bool = False             # aspect-ratio buckets instead of one crop size
    bucket_no_upscale: bool = False
    min_bucket: int = 256
    max_bucket: int = 0              # 0: 1024 for resolutions up to 768, else 2048
    bucket_step: int = 64
    fit: str = "crop"                # crop | pad
    near_dup: int = 6                # pHash Hamming distance; < 0 disables near-duplicate grouping
    keep: str = "largest"            # largest | sharpest
    trigger: str = ""
    caption_extension: str = ".txt"
    caption_output: str = "csv"      # csv | txt | both
    output_format: str = "png"       # png | jpg
    jpeg_quality: int = 95
    dry_run: bool = False
    threads: int = 0
    max_pixels: int = 8192 * 8192
    thumbnails: bool = True
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    clip_dedup: float = 0.0          # cosine of CLIP image embeddings; 0 disables semantic duplicates
    clip_model: str = None           # local CLIP folder (transformers layout)
    embedding_cache: str = None      # folder of cached embeddings; None = the user cache, "" = no cache
    device: str = None               # torch device for the CLIP model (default: cuda when present)
    batch_size: int = 16


def parse_resolution(value):
    """512 | '768' | '640x448' | (w, h) -> (w, h)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        w, h = int(value[0]), int(value[1])
    elif isinstance(value, int):
        w = h = value
    else:
        text = str(value).lower().replace(",", "x")
        try:
            parts = [int(p) for p in text.split("x")]
        except ValueError:
            raise UsageError("resolution must be a number or WxH, got %r" % (value,)) from None
        if len(parts) == 1:
            parts *= 2
        if len(parts) != 2:
            raise UsageError("resolution must be a number or WxH, got %r" % (value,))
        w, h = parts
    if not (64 <= w <= 8192 and 64 <= h <= 8192):
        raise UsageError("resolution %dx%d is out of range (64..8192)" % (w, h))
    return w, h


def _check_options(o):
    if o.fit not in ("crop", "pad"):
        raise UsageError("fit must be 'crop' or 'pad', got %r" % o.fit)
    if o.keep not in ("largest", "sharpest"):
        raise UsageError("keep must be 'largest' or 'sharpest', got %r" % o.keep)
    if o.caption_output not in ("csv", "txt", "both"):
        raise UsageError("caption_output must be 'csv', 'txt' or 'both', got %r" % o.caption_output)
    if o.output_format not in ("png", "jpg"):
        raise UsageError("output format must be 'png' or 'jpg', got %r" % o.output_format)
    if o.near_dup > 64:
        raise UsageError("near_dup is a Hamming distance between 64-bit hashes: 0..64 (or negative to disable)")
    if o.fit == "pad" and o.bucket:
        raise UsageError("fit='pad' pads to one size; it cannot be combined with buckets")
    if not o.caption_extension.startswith("."):
        raise UsageError("caption_extension must start with a dot, e.g. '.txt'")
    if o.clip_dedup:
        if not 0.0 < o.clip_dedup <= 1.0:
            raise UsageError("clip_dedup is a cosine similarity threshold in (0, 1] (0 turns it off), got %r"
                             % (o.clip_dedup,))
        if not o.clip_model:
            raise UsageError("clip_dedup needs a local CLIP model folder: --clip-model PATH (e.g. a download of "
                             "openai/clip-vit-base-patch32 or clip-vit-large-patch14; nothing is fetched)")
    if o.batch_size < 1:
        raise UsageError("batch_size must be at least 1, got %d" % o.batch_size)
    if not 0 <= o.threads <= 1024:
        raise UsageError("threads must be between 0 (all cores) and 1024, got %d" % o.threads)
    if o.bucket:
        if not 8 <= o.bucket_step <= min(o.resolution):
            raise UsageError("bucket step must be between 8 and the resolution's short side (%d), got %d"
                             % (min(o.resolution), o.bucket_step))
        if not 0 < o.min_bucket <= (o.max_bucket or 1 << 30):
            raise UsageError("min bucket size %d must be positive and at most the max bucket size %d"
                             % (o.min_bucket, o.max_bucket))


def _inside(child, parent):
    child, parent = os.path.realpath(child), os.path.realpath(parent)
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def list_images(src, exclude=None):
    """Walk src -> (sorted relative paths of candidate images, count of unrelated files skipped).
    Hidden files and folders are skipped; symlinked folders are not followed; `exclude`
    (the output folder when it lies inside src) is skipped."""
    images, skipped = [], 0
    exclude_real = os.path.realpath(exclude) if exclude else None
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (exclude_real and os.path.realpath(os.path.join(root, d)) == exclude_real))
        for name in sorted(files):
            if name.startswith("."):
                continue
            ext = os.path.splitext(name)[1].lower()
            if ext in IMAGE_EXTENSIONS or ext in OTHER_IMAGE_EXTENSIONS:
                images.append(os.path.relpath(os.path.join(root, name), src))
            elif ext not in OTHER_CAPTION_EXTENSIONS and name != "metadata.csv":
                skipped += 1  # captions are read separately; count only unrelated files
    images.sort()
    return images, skipped


def _safe_relpath(rel):
    """A UTF-8 output name for any input name (undecodable bytes become '_')."""
    raw = os.fsencode(rel)
    return raw.decode("utf-8", "replace").replace("\ufffd", "_")


def _output_names(rels, ext):
    """Output relative paths: same folders and stems, the output extension; collisions
    (photo.jpg and photo.png) get a numeric suffix."""
    taken, names = set(), {}
    for rel in rels:
        stem = os.path.splitext(_safe_relpath(rel))[0]
        candidate, n = stem + ext, 2
        while candidate.lower() in taken:
            candidate = "%s_%d%s" % (stem, n, ext)
            n += 1
        taken.add(candidate.lower())
        names[rel] = candidate
    return names


def _analyze(src, rels, o, progress):
    results = []
    paths = [os.path.join(src, r) for r in rels]
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start:start + CHUNK]
        results += _native.analyze_files(chunk, threads=o.threads or None, max_pixels=o.max_pixels,
                                         thumb_size=96 if o.thumbnails else 0)
        if progress:
            progress("analyze", min(start + CHUNK, len(paths)), len(paths))
    return results


def plan_image(size, resolution, buckets=None, no_upscale=False, step=64, fit="crop"):
    """The plan for an image of `size` (w, h after EXIF orientation): with `buckets` (from
    _native.bucket_resolutions) the sd-scripts bucket of the area of `resolution` (w, h), else
    `resolution` itself by cover + center crop (`fit="crop"`) or fit + white padding ("pad").
    ValueError when the image cannot be placed (smaller than one bucket step with no_upscale)."""
    if buckets is not None:
        area = resolution[0] * resolution[1]
        bucket, resized = _native.bucket_select(size, buckets, no_upscale=no_upscale, max_area=area, step=step)
        return _native.plan_bucket(size, bucket, resized)
    if fit == "pad":
        return _native.plan_pad(size, resolution)
    return _native.plan_crop(size, resolution)


def _plan(o, size, buckets):
    return plan_image(size, o.resolution, buckets if o.bucket else None, o.bucket_no_upscale, o.bucket_step, o.fit)


def _choose_kept(members, items, keep):
    # Ties (exact copies) go to the shorter file name: copies are usually the longer one
    # ("photo (1).jpg", "copy_of_photo.png").
    def key(i):
        it = items[i]
        area = it.width * it.height
        sharp = it.metrics.get("blur", 0.0)
        name = len(os.path.basename(it.rel))
        return (-area, -sharp, name, i) if keep == "largest" else (-sharp, -area, name, i)
    return min(members, key=key)


def _group_duplicates(items, usable, o, semantic_pairs=()):
    """Exact duplicates (same decoded pixels), near duplicates (pHash distance <= near_dup) and
    semantic duplicates (`semantic_pairs` of item indices) among usable images; returns a list
    of groups (lists of item indices, kept one first)."""
    parent = {i: i for i in usable}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_pixels = {}
    for i in usable:
        by_pixels.setdefault(items[i].hashes["pixels"], []).append(i)
    for members in by_pixels.values():
        for m in members[1:]:
            union(members[0], m)
    if o.near_dup >= 0 and len(usable) > 1:
        phashes = [int(items[i].hashes["phash"], 16) for i in usable]
        labels = group_near_duplicates(phashes, t=o.near_dup, threads=o.threads or None)
        for pos, label in enumerate(labels):
            union(usable[pos], usable[int(label)])
    base = {i: find(i) for i in usable}  # exact/near components, before semantic links
    for a, b in semantic_pairs:
        union(a, b)
    comps = {}
    for i in usable:
        comps.setdefault(find(i), []).append(i)
    groups = []
    for members in comps.values():
        if len(members) < 2:
            continue
        kept = _choose_kept(members, items, o.keep)
        groups.append([kept] + sorted(m for m in members if m != kept))
    groups.sort(key=lambda g: min(g))
    return groups, base


def _semantic_duplicates(src, items, usable, o, progress, warnings):
    """CLIP image embeddings of the usable images (cached by decoded-pixel hash and model) and the
    pairs of item indices whose cosine similarity reaches o.clip_dedup.
    Returns ({item index: normalised embedding}, [(a, b), ...])."""
    from .caption.clip_model import load_clip
    from .semantic import EmbeddingCache, default_cache_dir, normalize, similar_pairs
    model = load_clip(o.clip_model, device=o.device)
    keys = [items[i].hashes["pixels"] for i in usable]
    cache = None
    if o.embedding_cache != "":
        cache = EmbeddingCache(o.embedding_cache or default_cache_dir(), model.model_id)
        found, emb = cache.get(keys)
    else:
        found, emb = np.zeros(len(keys), bool), None
    missing = [k for k in range(len(usable)) if not found[k]]
    if missing:
        paths = [os.path.join(src, items[usable[k]].rel) for k in missing]
        fresh, errors = embed_files(model, paths, batch_size=o.batch_size, threads=o.threads or None,
                                    max_pixels=o.max_pixels,
                                    progress=(lambda d, t: progress("embed", d, t)) if progress else None)
        if emb is None or emb.shape[1] != fresh.shape[1]:  # nothing cached yet: the dim is the model's
            emb = np.zeros((len(usable), fresh.shape[1]), np.float32)
        emb[missing] = fresh
        ok = [m for m, e in zip(missing, errors) if e is None]
        for m, e in zip(missing, errors):
            if e is not None:
                items[usable[m]].reject("embed_failed", e)
        if cache is not None and ok and not o.dry_run:  # a dry run writes nothing, the cache included
            cache.put([keys[m] for m in ok], emb[ok])
    elif progress:
        progress("embed", len(usable), len(usable))
    live = [k for k in range(len(usable)) if items[usable[k]].status == "kept"]
    emb = normalize(emb[live])
    ii, jj, _ = similar_pairs(emb, o.clip_dedup, threads=o.threads or None)
    pairs = [(usable[live[a]], usable[live[b]]) for a, b in zip(ii.tolist(), jj.tolist())]
    return {usable[k]: emb[n] for n, k in enumerate(live)}, pairs


def embed_files(model, paths, batch_size=16, threads=None, max_pixels=None, progress=None):
    """CLIP image embeddings of image files -> (float32 [n, d] L2-normalised, errors per file).
    Files that cannot be decoded get a zero row and their decoder message."""
    from .caption.batches import default_depth, prepared_batches
    on_cpu = getattr(model, "on_cpu", True)
    rows, errors = [], []
    for batch in prepared_batches(paths, model.prep, batch_size=batch_size, threads=threads,
                                  max_pixels=max_pixels, depth=default_depth(on_cpu, True)):
        e = np.asarray(model.embed_images(batch.pixels), dtype=np.float32)
        e[[k for k, err in enumerate(batch.errors) if err is not None]] = 0.0
        rows.append(e)
        errors += batch.errors
        if progress:
            progress(len(errors), len(paths))
    dim = rows[0].shape[1] if rows else 0
    return (np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)), errors


def _read_manifest(out):
    """The files an earlier clean wrote into `out` (None when `out` holds no manifest)."""
    path = os.path.join(out, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DatasetError("cannot read %s (%s); delete it to start the output folder over"
                           % (display_path(path), e), path) from e
    if not isinstance(data, dict) or data.get("tool") != "lora-native clean" or \
            not isinstance(data.get("files"), list):
        raise DatasetError("%s is not a lora-native clean manifest" % display_path(path), path)
    return [f for f in data["files"] if isinstance(f, str)]


def _write_manifest(out, files):
    atomic_write_text(os.path.join(out, MANIFEST_NAME),
                      json.dumps({"tool": "lora-native clean", "files": sorted(files)}, indent=1) + "\n")


def _prepare_out(out, dry_run):
    """DST may be new, empty, or an earlier clean output (it holds our manifest). Returns the
    files that earlier run wrote. The manifest is written before any output, so an interrupted
    run leaves a folder that the next run recognises."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise DatasetError("output %s exists and is not a folder" % display_path(out), out)
    previous = _read_manifest(out) if os.path.isdir(out) else None
    if previous is None and os.path.isdir(out) and os.listdir(out):
        raise DatasetError("output folder %s is not empty and was not written by lora-native clean; "
                           "choose a new or empty folder" % display_path(out), out)
    previous = previous or []
    if not dry_run:
        os.makedirs(out, exist_ok=True)
        _write_manifest(out, previous)
    return previous


def _remove_stale(out, candidates, written):
    """Delete what an earlier (or interrupted) run wrote and this one did not: only names from
    our manifest, only inside `out`, only our kinds of file."""
    root = os.path.realpath(out)
    now = {os.path.normcase(f).casefold() for f in written}
    for rel in candidates:
        if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
            continue
        if os.path.normcase(rel).casefold() in now:
            continue  # also the same file on a case-insensitive file system
        if os.path.splitext(rel)[1].lower() not in (".png", ".jpg", ".txt", ".csv", ".json", ".html"):
            continue
        path = os.path.realpath(os.path.join(out, rel))
        if path.startswith(root + os.sep) and os.path.isfile(path):
            os.unlink(path)


def clean(src, out, progress=None, **options):
    """Clean the image folder `src` into `out`; returns a Report (see lora_native.report).

    Options are the fields of CleanOptions; `resolution` accepts 512, '768' or 'WxH';
    quality thresholds can be given as `quality=QualityThresholds(...)` or individually
    (min_side, max_aspect, blur, ..., reject_grayscale, ignore=[check names]).
    `progress(stage, done, total)` is called as work advances (stage: analyze, export).
    """
    started = time.time()
    q_fields = set(QualityThresholds.__dataclass_fields__)
    q_opts = {k: options.pop(k) for k in list(options) if k in q_fields}
    if "ignore" in q_opts:
        q_opts["ignore"] = frozenset(q_opts["ignore"])
    unknown = set(options) - set(CleanOptions.__dataclass_fields__)
    if unknown:
        raise UsageError("unknown clean option(s): %s" % ", ".join(sorted(unknown)))
    if "resolution" in options:
        options["resolution"] = parse_resolution(options["resolution"])
    if options.get("clip_dedup") and not options.get("clip_model") and os.environ.get("LORA_NATIVE_CLIP_MODEL"):
        options["clip_model"] = os.environ["LORA_NATIVE_CLIP_MODEL"]
    o = CleanOptions(**options)
    if q_opts:
        o = replace(o, quality=replace(o.quality, **q_opts))
    _check_options(o)

    src, out = os.path.abspath(os.fspath(src)), os.path.abspath(os.fspath(out))
    if not os.path.isdir(src):
        raise DatasetError("source folder %s does not exist" % display_path(src), src)
    if _inside(src, out):
        raise DatasetError("the output folder must not be the source folder or contain it "
                           "(the source is never modified)", out)
    previous_files = _prepare_out(out, o.dry_run)
    exclude = out if _inside(out, src) else None
    rels, skipped = list_images(src, exclude)
    warnings = []
    if skipped:
        warnings.append("%d file(s) that are neither images nor captions were skipped" % skipped)
    if not rels:
        warnings.append("no images found in %s" % display_path(src))
    captions = read_captions(src, rels, o.caption_extension, warnings)

    analyses = _analyze(src, rels, o, progress)
    items = []
    for rel, a in zip(rels, analyses):
        item = Item.from_analysis(rel, a)
        item.caption, item.caption_source = captions[rel]
        if not is_valid_utf8(rel):
            item.notes.append(("non_utf8_name", "file name is not valid UTF-8; the output is named %s"
                               % _safe_relpath(rel)))
        if a["error"]:
            item.reject("internal_error", a["error"])
        elif a["decoded"]:
            rejections, notes = evaluate(a, o.quality)
            for code, message in rejections:
                item.reject(code, message)
            item.notes.extend(notes)
        items.append(item)

    usable = [i for i, it in enumerate(items) if it.status == "kept"]
    embeddings, semantic_pairs = {}, []
    if o.clip_dedup and len(usable) > 1:
        embeddings, semantic_pairs = _semantic_duplicates(src, items, usable, o, progress, warnings)
    groups, base = _group_duplicates(items, usable, o, semantic_pairs)
    for gid, members in enumerate(groups):
        kept = members[0]
        items[kept].group = gid
        for m in members[1:]:
            exact = items[m].hashes["pixels"] == items[kept].hashes["pixels"]
            d = hamming(int(items[m].hashes["phash"], 16), int(items[kept].hashes["phash"], 16))
            kind = "exact" if exact else "near" if base[m] == base[kept] else "semantic"
            items[m].mark_duplicate(items[kept].path, kind, d, gid)
            if m in embeddings and kept in embeddings:
                items[m].similarity = float(embeddings[m] @ embeddings[kept])

    kept = [it for it in items if it.status == "kept"]
    ext = ".png" if o.output_format == "png" else ".jpg"
    names = _output_names([it.rel for it in kept], ext)
    buckets = None
    if o.bucket:
        max_bucket = o.max_bucket or (1024 if max(o.resolution) <= 768 else 2048)
        buckets = _native.bucket_resolutions(o.resolution, min_size=o.min_bucket, max_size=max_bucket,
                                             step=o.bucket_step)
    for it in kept:
        try:
            it.plan = _plan(o, (it.width, it.height), buckets)
        except ValueError as e:
            it.reject("too_small", str(e))
            continue
        it.output = names[it.rel]
        it.output_size = tuple(it.plan["out_size"])
        it.caption = with_trigger(it.caption, o.trigger)
    kept = [it for it in kept if it.status == "kept"]

    written = set()
    if not o.dry_run:
        # Until this run ends, the manifest lists the old files and the new ones.
        planned = {it.output for it in kept} | {"report.json", "report.html"}
        if o.caption_output in ("csv", "both"):
            planned.add("metadata.csv")
        if o.caption_output in ("txt", "both"):
            planned |= {os.path.splitext(it.output)[0] + ".txt" for it in kept}
        _write_manifest(out, set(previous_files) | planned)
        _export(src, out, kept, o, progress)
        kept_ok = [it for it in kept if it.status == "kept"]
        written = {it.output for it in kept_ok} | {"report.json", "report.html"}
        if o.caption_output in ("csv", "both"):
            atomic_write_text(os.path.join(out, "metadata.csv"),
                              format_metadata_csv((it.output, it.caption) for it in kept_ok))
            written.add("metadata.csv")
        if o.caption_output in ("txt", "both"):
            for it in kept_ok:
                txt = os.path.splitext(it.output)[0] + ".txt"
                atomic_write_text(os.path.join(out, txt), it.caption + "\n")
                written.add(txt)
        _remove_stale(out, set(previous_files) | planned, written)

    report = Report(src=src, out=out, items=items, groups=groups, warnings=warnings, options=o,
                    dry_run=o.dry_run, elapsed=time.time() - started)
    if not o.dry_run:
        write_reports(report, out, atomic_write_text)
        _write_manifest(out, written)
    return report


def _export(src, out, kept, o, progress):
    jobs = []
    for it in kept:
        dst = os.path.join(out, it.output)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        jobs.append((os.path.join(src, it.rel), dst, (it.width, it.height), it.plan, int(it.hashes["file"], 16)))
    for start in range(0, len(jobs), CHUNK):
        chunk = jobs[start:start + CHUNK]
        errors = _native.export_files(chunk, threads=o.threads or None, format=o.output_format,
                                      quality=o.jpeg_quality, max_pixels=o.max_pixels)
        for it, error in zip(kept[start:start + CHUNK], errors):
            if error:
                it.reject("export_failed", error)
                it.output = None
        if progress:
            progress("export", min(start + CHUNK, len(jobs)), len(jobs))


__all__ = ["clean", "CleanOptions", "QualityThresholds", "list_images", "parse_resolution", "plan_image",
           "IMAGE_EXTENSIONS"]
