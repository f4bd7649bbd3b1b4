"""The CLIP tokenizer: where its vocabulary comes from, and tokenizing to exactly 77 ids.

Single-file checkpoints carry no vocabulary. The first source found wins:
1. `tokenizer_path` given by the user: a folder with vocab.json + merges.txt (a diffusers
   `tokenizer/` folder, ComfyUI's `comfy/sd1_tokenizer`), a tokenizer.json, or a CLIP BPE file
   (`bpe_simple_vocab_16e6.txt.gz`);
2. the tokenizer folders of the model itself: `tokenizer/` (and `tokenizer_2/`) inside a diffusers
   folder; `<name>.tokenizer/` or `tokenizer/` beside a single file;
3. the host's own copy: ComfyUI's `comfy/sd1_tokenizer` (located, never imported);
4. the Hugging Face cache, offline (`openai/clip-vit-large-patch14`, SDXL's
   `laion/CLIP-ViT-bigG-14-laion2B-39B-b160k`, the Stable Diffusion repositories' tokenizer folders);
5. an installed package shipping `bpe_simple_vocab_16e6.txt.gz` (open_clip, OpenAI's clip),
   located with importlib.util.find_spec, never imported;
else a ModelError saying where to put one.

Facts: the BPE file has a header line, then merges; CLIP uses lines 1..48894. The vocabulary is
the 256 byte symbols (GPT-2's byte-to-unicode order, so "!" is id 0), the same with "</w>",
one token per merge, then <|startoftext|> 49406 and <|endoftext|> 49407. SDXL's second
tokenizer (OpenCLIP bigG) is the same BPE padded with "!" (id 0) instead of <|endoftext|>.
Traps: transformers 5 ignores `CLIPTokenizer(vocab_file=, merges_file=)` and silently builds a
2-token tokenizer, so we always go through `from_pretrained(folder)` and check the size; some
folders (ComfyUI's) declare model_max_length 8192, so we pad and truncate to 77 explicitly.
"""
import gzip
import hashlib
import importlib.util
import json
import os
import shutil

from ..errors import ModelError
from ..fsutil import atomic_write_text, display_path

MAX_LENGTH = 77
CLIP_MERGES = 49152 - 256 - 2  # 48894 merges are used from the BPE file
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
PAD_TOKENS = {"text_encoder": EOS, "text_encoder_2": "!"}
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BPE_PACKAGES = ("open_clip", "clip")
HF_SOURCES = (  # (repository, subfolder) in the Hugging Face cache; all hold the same BPE
    ("openai/clip-vit-large-patch14", ""),
    ("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", ""),
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "tokenizer"),
    ("runwayml/stable-diffusion-v1-5", "tokenizer"),
    ("stabilityai/stable-diffusion-xl-base-1.0", "tokenizer"),
    ("stabilityai/stable-diffusion-xl-base-1.0", "tokenizer_2"),
)


def bytes_to_unicode():
    """GPT-2/CLIP's map of the 256 byte values to printable characters, in vocabulary order:
    the printable bytes first (ids 0..187 start with "!"), then the others mapped past 255."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    order, chars = printable[:], [chr(b) for b in printable]
    n = 0
    for b in range(256):
        if b not in printable:
            order.append(b)
            chars.append(chr(256 + n))
            n += 1
    return dict(zip(order, chars))


def cache_dir():
    """Where converted tokenizers are kept: $LORA_NATIVE_CACHE, else the user's cache folder."""
    root = os.environ.get("LORA_NATIVE_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lora-native")
    return root


# ---------------------------------------------------------------- BPE file -> vocab.json + merges.txt

def read_bpe_merges(path, limit=CLIP_MERGES):
    """The merges of a CLIP BPE file (.txt.gz or .txt): lines 1..limit after the header."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ModelError("cannot read the BPE file %s: %s" % (display_path(path), e), path) from None
    lines = text.split("\n")[1:limit + 1]
    merges = []
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ModelError("%s:%d: a merge line must hold two symbols, got %r" % (display_path(path), number, line), path)
        merges.append((parts[0], parts[1]))
    if not merges:
        raise ModelError("%s holds no BPE merges" % display_path(path), path)
    return merges


def vocab_from_merges(merges):
    """The CLIP vocabulary {token: id} built from the merges (see the module's facts)."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab


def write_tokenizer_folder(vocab, merges, folder):
    """vocab.json, merges.txt ("#version: 0.2" first) and a tokenizer_config.json saying 77."""
    os.makedirs(folder, exist_ok=True)
    atomic_write_text(os.path.join(folder, "vocab.json"), json.dumps(vocab, ensure_ascii=False))
    atomic_write_text(os.path.join(folder, "merges.txt"), "#version: 0.2\n" + "".join("%s %s\n" % m for m in merges))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "bos_token": BOS,
              "eos_token": EOS, "unk_token": EOS, "pad_token": EOS, "do_lower_case": True}
    atomic_write_text(os.path.join(folder, "tokenizer_config.json"), json.dumps(config, indent=2))
    return folder


def folder_from_bpe(path):
    """A tokenizer folder converted from a BPE file, kept in the cache (keyed by the file's hash)."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    folder = os.path.join(cache_dir(), "tokenizers", "bpe-" + digest)
    if not (os.path.isfile(os.path.join(folder, "vocab.json")) and os.path.isfile(os.path.join(folder, "merges.txt"))):
        merges = read_bpe_merges(path)
        write_tokenizer_folder(vocab_from_merges(merges), merges, folder)
    return folder


# ---------------------------------------------------------------- building a CLIPTokenizer

def _is_tokenizer_folder(folder):
    return os.path.isdir(folder) and (
        (os.path.isfile(os.path.join(folder, "vocab.json")) and os.path.isfile(os.path.join(folder, "merges.txt")))
        or os.path.isfile(os.path.join(folder, "tokenizer.json")))


def _as_folder(source):
    """A folder CLIPTokenizer.from_pretrained can read, from any accepted source."""
    source = os.fspath(source)
    if os.path.isdir(source):
        if _is_tokenizer_folder(source):
            return source
        bpe = os.path.join(source, BPE_FILE)
        if os.path.isfile(bpe):
            return folder_from_bpe(bpe)
        raise ModelError("%s holds no tokenizer: expected vocab.json + merges.txt, tokenizer.json or %s"
                         % (display_path(source), BPE_FILE), source)
    if not os.path.isfile(source):
        raise ModelError("tokenizer not found: %s" % display_path(source), source)
    name = os.path.basename(source)
    if name.endswith(".json"):
        if name == "tokenizer.json":
            return os.path.dirname(source) or "."
        with open(source, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        folder = os.path.join(cache_dir(), "tokenizers", "json-" + digest)
        os.makedirs(folder, exist_ok=True)
        shutil.copyfile(source, os.path.join(folder, "tokenizer.json"))
        return folder
    if name.endswith((".txt.gz", ".txt")):
        return folder_from_bpe(source)
    raise ModelError("%s is not a tokenizer: give a folder with vocab.json + merges.txt, a tokenizer.json "
                     "or a CLIP BPE file (.txt.gz)" % display_path(source), source)


def load_clip_tokenizer(source, pad_token=EOS):
    """A CLIPTokenizer from a folder / tokenizer.json / BPE file, padded with `pad_token`, 77 long."""
    from transformers import CLIPTokenizer

    folder = _as_folder(source)
    try:
        tok = CLIPTokenizer.from_pretrained(folder, pad_token=pad_token, local_files_only=True)
    except Exception as e:  # transformers raises many kinds; the message is what matters
        raise ModelError("cannot build a CLIP tokenizer from %s: %s" % (display_path(source), e), os.fspath(source)) from None
    expected = None
    vocab_file = os.path.join(folder, "vocab.json")
    if os.path.isfile(vocab_file):
        with open(vocab_file, encoding="utf-8") as f:
            expected = len(json.load(f))
    vocab = tok.get_vocab()
    if (expected is not None and len(tok) != expected) or len(tok) <= 3 or BOS not in vocab or EOS not in vocab:
        missing = [t for t in (BOS, EOS, pad_token) if t not in vocab]
        raise ModelError("the CLIP tokenizer built from %s has %d tokens (vocab.json has %s%s): not a CLIP vocabulary, "
                         "or this transformers version did not read it"
                         % (display_path(source), len(tok), expected, ", missing " + ", ".join(missing) if missing else ""),
                         os.fspath(source))
    tok.model_max_length = MAX_LENGTH  # folders may say 8192 (ComfyUI); CLIP has 77 positions
    return tok


def tokenize(tokenizer, prompts, max_length=MAX_LENGTH):
    """Token ids [len(prompts), max_length] (a torch LongTensor): <|startoftext|>, the prompt cut to
    fit, <|endoftext|>, then padding; always exactly max_length whatever the tokenizer declares."""
    if isinstance(prompts, str):
        prompts = [prompts]
    out = tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    return out.input_ids


# ---------------------------------------------------------------- where the vocabulary comes from

def _hf_cache_folders():
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return []
    found = []
    for repo, sub in HF_SOURCES:
        paths = []
        for name in ("vocab.json", "merges.txt"):
            try:
                p = try_to_load_from_cache(repo, (sub + "/" if sub else "") + name)
            except Exception:  # a malformed cache entry: treat as absent
                p = None
            paths.append(p if isinstance(p, str) else None)
        if all(paths) and os.path.dirname(paths[0]) == os.path.dirname(paths[1]):
            found.append((os.path.dirname(paths[0]), "Hugging Face cache (%s%s)" % (repo, "/" + sub if sub else "")))
    return found


def _package_file(package, *parts):
    """A file inside an installed package, located without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, *parts)
        if os.path.exists(path):
            return path
    return None


def beside_model(model_path, component="text_encoder"):
    """Tokenizer folders that belong to a model: diffusers `tokenizer/` (`tokenizer_2/`), or
    `<name>.tokenizer/` / `tokenizer/` next to a single file."""
    if not model_path:
        return []
    model_path = os.fspath(model_path)
    sub = "tokenizer_2" if component == "text_encoder_2" else "tokenizer"
    if os.path.isdir(model_path):
        candidates = [os.path.join(model_path, sub), os.path.join(model_path, "tokenizer")]
    else:
        stem = os.path.splitext(model_path)[0]
        candidates = [stem + ".tokenizer", os.path.join(os.path.dirname(model_path), "tokenizer")]
    return [c for c in dict.fromkeys(candidates) if _is_tokenizer_folder(c)]


def find_tokenizer_sources(tokenizer_path=None, model_path=None, component="text_encoder"):
    """Every usable source in the order of the rule, as (path, description); the first wins."""
    found = []
    if tokenizer_path:
        found.append((os.fspath(tokenizer_path), "tokenizer_path"))
    found += [(p, "beside the model") for p in beside_model(model_path, component)]
    comfy = _package_file("comfy", "sd1_tokenizer")
    if comfy and _is_tokenizer_folder(comfy):
        found.append((comfy, "ComfyUI's comfy/sd1_tokenizer"))
    found += _hf_cache_folders()
    for package in BPE_PACKAGES:
        bpe = _package_file(package, BPE_FILE)
        if bpe:
            found.append((bpe, "the %s package's %s" % (package, BPE_FILE)))
    return found


def no_tokenizer_message(model_path=None):
    where = " for %s" % display_path(model_path) if model_path else ""
    return ("no CLIP tokenizer found%s (single-file checkpoints carry none). Set tokenizer_path to a folder "
            "holding vocab.json + merges.txt (the tokenizer/ folder of a diffusers Stable Diffusion model, or "
            "ComfyUI's comfy/sd1_tokenizer), a tokenizer.json, or open_clip's %s; or put a folder named "
            "tokenizer/ beside the model; or have openai/clip-vit-large-patch14 in the Hugging Face cache."
            % (where, BPE_FILE))


def load_tokenizers(text_encoders, tokenizer_path=None, model_path=None):
    """One CLIPTokenizer per text-encoder name ("text_encoder", "text_encoder_2"), each with its pad."""
    tokenizers = []
    for component in text_encoders:
        sources = find_tokenizer_sources(tokenizer_path, model_path, component)
        if not sources:
            raise ModelError(no_tokenizer_message(model_path), model_path and os.fspath(model_path))
        tokenizers.append(load_clip_tokenizer(sources[0][0], pad_token=PAD_TOKENS[component]))
    return tokenizers
