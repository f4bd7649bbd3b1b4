"""`<lora:NAME:W>` prompt tags, shared by every host (WebUI, ComfyUI, our own UI).

    parsed = parse("a cat, <lora:styles/my style:0.7>, b")
    parsed.text        # "a cat, b": what the text encoder sees
    parsed.loras       # [LoraTag("styles/my style", unet=0.7, te=0.7)]
    found, warnings = resolve(parsed.loras, folder_paths.get_filename_list("loras"))

Forms, read as A1111's built-in Lora extension reads them: `<lora:NAME>` (weight 1.0),
`<lora:NAME:W>` (UNet and text encoder W), `<lora:NAME:W_te:W_unet>` (positional: the text
encoder weight comes first there), and the named `te=W` / `unet=W` in any position after NAME.
The same NAME twice adds its weights. A malformed tag stays in the text with a warning: a
typo must never stop a generation.
"""
import difflib
import math
import re
from dataclasses import dataclass, field

_OPEN = re.compile(r"<lora:", re.IGNORECASE)
# File endings a LoRA list may carry; only these are stripped, so "my.style" keeps its dot.
MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")


@dataclass
class LoraTag:
    name: str
    unet: float = 1.0
    te: float = None

    def __post_init__(self):
        if self.te is None:
            self.te = self.unet


@dataclass
class Parsed:
    text: str
    loras: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


def _weight(text):
    """A finite float, or None."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_body(body):
    """(LoraTag, None) or (None, problem) for the text between `<lora:` and `>`."""
    parts = body.split(":")
    name = parts[0].strip()
    if not name:
        return None, "no LoRA name"
    positional, named = [], {}
    for part in parts[1:]:
        if "=" in part:
            key, _, value = part.partition("=")
            key = key.strip().lower()
            if key not in ("te", "unet"):
                return None, "unknown setting %r (te= and unet= are understood)" % key
            w = _weight(value)
            if w is None:
                return None, "%s=%r is not a number" % (key, value.strip())
            named[key] = w
            continue
        w = _weight(part)
        if w is None:
            return None, "weight %r is not a number" % part.strip()
        positional.append(w)
    if len(positional) > 2:
        return None, "too many weights (at most two: text encoder, then UNet)"
    te = positional[0] if positional else 1.0
    unet = positional[1] if len(positional) > 1 else te
    te = named.get("te", te)
    unet = named.get("unet", unet)
    return LoraTag(name, unet=unet, te=te), None


def _tidy(text):
    """Collapse what a removed tag leaves behind: doubled spaces and commas, separators at the ends."""
    lines = []
    for line in text.split("\n"):
        line = re.sub(r"[ \t]+", " ", line)
        line = re.sub(r"\s*,(\s*,)+", ",", line)   # "a, , b" -> "a, b"
        line = re.sub(r" ,", ",", line)
        line = line.strip(" \t,")
        lines.append(line)
    return "\n".join(lines).strip("\n")


def parse(text):
    """Parsed(text without the tags, [LoraTag], [warnings]). Never raises on odd input."""
    text = "" if text is None else str(text)
    out, tags, warnings = [], {}, []
    pos, removed = 0, False
    for m in _OPEN.finditer(text):
        start = m.start()
        if start < pos:
            continue
        close = text.find(">", m.end())
        reopen = text.find("<", m.end())
        if close < 0 or (0 <= reopen < close):
            warnings.append("unclosed LoRA tag %r left in the prompt" % text[start:start + 40])
            continue
        raw = text[start:close + 1]
        tag, problem = _parse_body(text[m.end():close])
        if tag is None:
            warnings.append("malformed LoRA tag %s left in the prompt: %s" % (raw, problem))
            continue
        out.append(text[pos:start])
        pos, removed = close + 1, True
        if tag.name in tags:  # the same LoRA twice: weights add, as in A1111
            tags[tag.name].unet += tag.unet
            tags[tag.name].te += tag.te
        else:
            tags[tag.name] = tag
    out.append(text[pos:])
    clean = "".join(out)
    return Parsed(_tidy(clean) if removed else clean, list(tags.values()), warnings)


def _strip_extension(name):
    lower = name.lower()
    for ext in MODEL_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def _keys(entry):
    """(relative path without extension, file stem) of an entry of a host's LoRA list."""
    rel = _strip_extension(str(entry).replace("\\", "/"))
    return rel, rel.rsplit("/", 1)[-1]


def resolve(tags, available_names):
    """Match tags to a host's LoRA list (e.g. `folder_paths.get_filename_list("loras")`).

    A tag names a file by its relative path or its stem, without extension; exact matches win
    over case-insensitive ones. Returns ([(tag name, list entry, unet, te)], [warnings]);
    unknown names are warned about with close matches, never raised."""
    available = list(available_names)
    found, warnings = [], []
    if not tags:
        return found, warnings
    rel_of, stem_of = {}, {}
    for entry in available:
        rel, stem = _keys(entry)
        rel_of.setdefault(rel, []).append(entry)
        stem_of.setdefault(stem, []).append(entry)
    rel_fold, stem_fold = {}, {}
    for key, entries in rel_of.items():
        rel_fold.setdefault(key.lower(), []).extend(entries)
    for key, entries in stem_of.items():
        stem_fold.setdefault(key.lower(), []).extend(entries)
    for tag in tags:
        name = _strip_extension(tag.name.strip().replace("\\", "/"))
        hits = (rel_of.get(name) or stem_of.get(name) or rel_fold.get(name.lower())
                or stem_fold.get(name.lower()))
        if not hits:
            close = difflib.get_close_matches(name, sorted(set(rel_of) | set(stem_of)), n=5, cutoff=0.5)
            hint = ("; close matches: %s" % ", ".join(close)) if close else (
                "; %d LoRA files known" % len(available) if available else "; no LoRA files known")
            warnings.append("no LoRA named %r%s" % (tag.name, hint))
            continue
        hits = sorted(set(hits))
        if len(hits) > 1:
            warnings.append("LoRA name %r matches %d files (%s); using %s"
                            % (tag.name, len(hits), ", ".join(hits), hits[0]))
        found.append((tag.name, hits[0], tag.unet, tag.te))
    return found, warnings
