"""Training data for causal-LM LoRA (task_type: text-generation): reading, tokenizing, label
masks, truncation, packing and the deterministic batch order.

Sources (train_data_dir is one file or a folder searched recursively, in sorted order):

- `.jsonl`, one JSON object a line: `{"text": ...}` (the field named by text_column; every token
  is learned), `{"prompt": ..., "completion": ...}` (or `"response"`; only the completion is
  learned), or `{"messages": [{"role": ..., "content": ...}, ...]}` (rendered with the
  tokenizer's chat template; only the assistant turns are learned);
- `.txt`: a whole file is one sample (txt_split: file) or each blank-line-separated paragraph is
  (txt_split: paragraph);
- `.csv` (e.g. metadata.csv) with a header `prompt,response` (or `prompt,completion`, or `text`).

A bad line (invalid JSON, missing fields, wrong types) or a bad file is reported as `file:line:
problem` and skipped, never fatal; an empty result is a clear error. Plain text and prompt/
completion samples get the tokenizer's special tokens (BOS for LLaMA-likes) and an EOS at the end
(learned, so the model learns to stop); chat samples are tokenized as the template writes them.

Labels follow transformers: `labels[t]` is the token at t when it is learned, else -100; the model
predicts position t from the positions before it. The first token of every sample is never a
target, so packed samples never learn across a boundary; position ids restart at 0 for each
packed sample, from which transformers (>= 4.5x) builds a block-diagonal attention mask, so packed
samples do not see each other either.
"""
import csv
import hashlib
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import DatasetError
from . import data as train_data

IGNORE = -100
_SPLIT_STREAM = 0x7E48  # the validation split's


@dataclass
class TextSample:
    """One tokenized training sequence (a sample, or several packed ones)."""
    input_ids: np.ndarray        # int64 [T]
    labels: np.ndarray           # int64 [T]; IGNORE where nothing is learned
    position_ids: np.ndarray     # int64 [T]; restarts at 0 for every packed sample
    source: str                  # file:line of its (first) sample
    repeats: int = 1             # for train_data.epoch_batches
    parts: int = 1               # samples packed into it


@dataclass
class TextDataset:
    samples: list
    warnings: list = field(default_factory=list)
    bad: list = field(default_factory=list)        # "file:line: problem" for every skipped line/file
    files: list = field(default_factory=list)
    kinds: dict = field(default_factory=dict)      # text / prompt-completion / chat -> count
    num_raw: int = 0                               # samples before packing
    truncated: int = 0                             # cut to max_seq_length
    longest: int = 0                               # tokens of the longest sample before cutting
    dropped: int = 0                               # nothing left to learn after cutting
    tokens: int = 0                                # tokens in all sequences
    learned_tokens: int = 0                        # of which are targets

    @property
    def fingerprint(self):
        return fingerprint(self.samples)


def fingerprint(samples):
    """What a resumed run must find again: the same token sequences."""
    h = hashlib.sha256()
    for s in samples:
        for a in (s.input_ids, s.labels, s.position_ids):
            h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        h.update(b"\0")
    return h.hexdigest()


class _Bad(ValueError):
    pass


# ---- reading -------------------------------------------------------------------------

def _display(path, root):
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def list_files(path):
    """The data files under `path` (or `path` itself), sorted; and the names of ignored files."""
    if os.path.isfile(path):
        return [path], []
    if not os.path.isdir(path):
        raise DatasetError("train_data_dir: %s does not exist" % path)
    found, ignored = [], []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            full = os.path.join(root, name)
            (found if os.path.splitext(name)[1].lower() in (".jsonl", ".txt", ".csv") else ignored).append(full)
    return found, ignored


def _read_text(path):
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise _Bad("%d: not UTF-8 text (byte 0x%02x)" % (line, raw[e.start])) from None
    return text[1:] if text.startswith("\ufeff") else text


def _string(obj, key, where_ok_empty=False):
    if key not in obj:
        raise _Bad("missing %r" % key)
    value = obj[key]
    if not isinstance(value, str):
        raise _Bad("%r must be a string, found %s" % (key, _type_name(value)))
    if not where_ok_empty and not value.strip():
        raise _Bad("%r is empty" % key)
    return value


def _type_name(value):
    return {dict: "an object", list: "a list", bool: "true/false", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _record(obj, text_column):
    """A parsed JSON object / CSV row -> (kind, payload)."""
    if not isinstance(obj, dict):
        raise _Bad("expected a JSON object, found %s" % _type_name(obj))
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise _Bad("'messages' must be a non-empty list")
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                raise _Bad("messages[%d] must be an object with role and content" % i)
            role = m.get("role")
            if not isinstance(role, str) or not role:
                raise _Bad("messages[%d]: 'role' must be a string" % i)
            if not isinstance(m.get("content"), str):
                raise _Bad("messages[%d]: 'content' must be a string, found %s" % (i, _type_name(m.get("content"))))
            out.append({"role": role, "content": m["content"]})
        if not any(m["role"] == "assistant" and m["content"].strip() for m in out):
            raise _Bad("no assistant message: nothing to learn")
        return "chat", out
    if "prompt" in obj and ("completion" in obj or "response" in obj):
        answer = "completion" if "completion" in obj else "response"
        return "prompt-completion", (_string(obj, "prompt", True), _string(obj, answer))
    if text_column in obj:
        return "text", _string(obj, text_column)
    keys = ", ".join(sorted(obj)[:6]) or "none"
    raise _Bad("expected %r, 'prompt' + 'completion', or 'messages' (found keys: %s)" % (text_column, keys))


def read_records(path, text_column="text", txt_split="file"):
    """-> (records [(source, kind, payload)], bad ["file:line: problem"], files, ignored)."""
    files, ignored = list_files(path)
    root = path if os.path.isdir(path) else os.path.dirname(path)
    records, bad = [], []

    def add(name, n, obj):
        try:
            kind, payload = _record(obj, text_column)
        except _Bad as e:
            bad.append("%s:%d: %s" % (name, n, e))
            return
        records.append(("%s:%d" % (name, n), kind, payload))

    for f in files:
        name = _display(f, root)
        ext = os.path.splitext(f)[1].lower()
        try:
            text = _read_text(f)
        except _Bad as e:
            bad.append("%s:%s" % (name, e))
            continue
        except OSError as e:
            bad.append("%s: cannot read (%s)" % (name, e.strerror or e))
            continue
        if ext == ".jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    where = " at column %d" % e.colno if getattr(e, "colno", None) else ""
                    bad.append("%s:%d: invalid JSON (%s%s)" % (name, n, getattr(e, "msg", e), where))
                    continue
                add(name, n, obj)
        elif ext == ".txt":
            if txt_split == "paragraph":
                start, lines = None, []
                for n, line in enumerate(text.splitlines() + [""], 1):
                    if line.strip():
                        if start is None:
                            start = n
                        lines.append(line)
                    elif lines:
                        records.append(("%s:%d" % (name, start), "text", "\n".join(lines)))
                        start, lines = None, []
            elif text.strip():
                records.append(("%s:1" % name, "text", text.strip("\n")))
            else:
                bad.append("%s:1: empty file" % name)
        else:  # .csv
            rows = csv.reader(text.splitlines())
            header = next(rows, None)
            cols = [h.strip().lower() for h in header] if header else []
            answer = "response" if "response" in cols else "completion" if "completion" in cols else None
            if not ("prompt" in cols and answer) and text_column not in cols:
                bad.append("%s:1: a csv needs a header 'prompt,response' (or 'prompt,completion', or %r), found %s"
                           % (name, text_column, ",".join(cols) or "nothing"))
                continue
            for n, row in enumerate(rows, 2):
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(cols):
                    bad.append("%s:%d: %d fields, the header has %d" % (name, n, len(row), len(cols)))
                    continue
                obj = dict(zip(cols, row))
                if "prompt" in cols and answer:
                    add(name, n, {"prompt": obj["prompt"], answer: obj[answer]})
                else:
                    add(name, n, {text_column: obj[text_column]})
    return records, bad, files, ignored


# ---- tokenizing ----------------------------------------------------------------------

def render_chat(tokenizer, messages):
    """A conversation as segments [(text, learned)], the assistant turns learned.

    Each assistant turn's text is found by rendering the conversation up to the turn before it
    with the generation prompt, then up to and including it: what the second adds to the first
    is the turn (its end-of-turn marker included). This needs a template whose rendering of a
    conversation starts with its rendering of every shorter one; when it does not, templates
    with `{% generation %}` blocks are asked for the assistant mask directly."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    segments, pos = [], 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        upto = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
        if not (upto.startswith(before) and full.startswith(upto) and len(before) >= pos):
            return None
        if before[pos:]:
            segments.append((before[pos:], False))
        segments.append((upto[len(before):], True))
        pos = len(upto)
    if full[pos:]:
        segments.append((full[pos:], False))
    return segments


def _generation_mask(tokenizer, messages):
    """(ids, learned) from a template's {% generation %} blocks, or None."""
    if "generation" not in (tokenizer.chat_template or ""):
        return None
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids = list(out["input_ids"])
    mask = [bool(x) for x in out["assistant_masks"]]
    return (ids, mask) if any(mask) else None


def encode_segments(tokenizer, segments, add_special_tokens, add_eos):
    """[(text, learned)] -> (ids, learned per token). A token is learned when any of its
    characters is; special tokens the tokenizer adds (BOS) are not."""
    text = "".join(t for t, _ in segments)
    learned_chars = np.zeros(len(text) + 1, dtype=np.int32)
    pos = 0
    for t, on in segments:
        if on:
            learned_chars[pos:pos + len(t)] = 1
        pos += len(t)
    prefix = np.concatenate([[0], np.cumsum(learned_chars[:len(text)])])
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        mask = [e > s and prefix[e] - prefix[s] > 0 for s, e in enc["offset_mapping"]]
    else:  # no offsets: tokenize growing prefixes at the segment boundaries
        ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        mask, pos, done = [False] * len(ids), 0, 0
        for t, on in segments:
            pos += len(t)
            n = len(tokenizer(text[:pos], add_special_tokens=add_special_tokens)["input_ids"])
            if on:
                for k in range(done, min(n, len(ids))):
                    mask[k] = True
            done = n
    if add_eos and tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
        mask.append(bool(segments and segments[-1][1]))
    return ids, mask


def tokenize_record(tokenizer, kind, payload):
    """-> (ids, learned) for one record; raises _Bad when it cannot be rendered."""
    if kind == "text":
        return encode_segments(tokenizer, [(payload, True)], True, True)
    if kind == "prompt-completion":
        prompt, completion = payload
        return encode_segments(tokenizer, [(prompt, False), (completion, True)], True, True)
    if not getattr(tokenizer, "chat_template", None):
        raise _Bad("chat 'messages' need a chat template: the tokenizer has none; set chat_template in the config")
    try:
        segments = render_chat(tokenizer, payload)
        if segments is None:
            got = _generation_mask(tokenizer, payload)
            if got is None:
                raise _Bad("the chat template does not render conversations prefix by prefix and has no "
                           "{% generation %} blocks: cannot tell the assistant's tokens")
            return got
    except _Bad:
        raise
    except Exception as e:  # a template error (raise_exception(), a role it refuses)
        raise _Bad("the chat template failed: %s" % e) from None
    return encode_segments(tokenizer, segments, False, False)


def _sequence(ids, learned, source):
    ids = np.asarray(ids, dtype=np.int64)
    labels = np.where(np.asarray(learned, dtype=bool), ids, IGNORE)
    if len(labels):
        labels[0] = IGNORE  # never predicted from anything of its own sample
    return TextSample(ids, labels, np.arange(len(ids), dtype=np.int64), source)


def pack(samples, max_len):
    """Samples (in order) into sequences of at most max_len tokens, none split: a sample goes into
    the current sequence when it fits, else starts the next one."""
    out, cur = [], []

    def flush():
        if cur:
            out.append(TextSample(np.concatenate([s.input_ids for s in cur]), np.concatenate([s.labels for s in cur]),
                                  np.concatenate([s.position_ids for s in cur]), cur[0].source, parts=len(cur)))
    used = 0
    for s in samples:
        if cur and used + len(s.input_ids) > max_len:
            flush()
            cur, used = [], 0
        cur.append(s)
        used += len(s.input_ids)
    flush()
    return out


def load_text_dataset(path, tokenizer, max_seq_length, text_column="text", txt_split="file"):
    """Read, tokenize, truncate -> TextDataset (not packed yet: see `pack`)."""
    records, bad, files, ignored = read_records(path, text_column, txt_split)
    ds = TextDataset([], bad=bad, files=files)
    if ignored:
        ds.warnings.append("%d file(s) in %s are not .jsonl, .txt or .csv and were ignored, e.g. %s"
                           % (len(ignored), path, _display(ignored[0], path)))
    for source, kind, payload in records:
        try:
            ids, learned = tokenize_record(tokenizer, kind, payload)
        except _Bad as e:
            ds.bad.append("%s: %s" % (source, e))
            continue
        ds.longest = max(ds.longest, len(ids))
        if len(ids) > max_seq_length:
            ds.truncated += 1
            ids, learned = ids[:max_seq_length], learned[:max_seq_length]
        s = _sequence(ids, learned, source)
        if not (s.labels != IGNORE).any():
            ds.dropped += 1
            ds.bad.append("%s: nothing left to learn within max_seq_length %d tokens" % (source, max_seq_length)
                          if len(ids) == max_seq_length else "%s: nothing to learn" % source)
            continue
        ds.kinds[kind] = ds.kinds.get(kind, 0) + 1
        ds.samples.append(s)
    ds.num_raw = len(ds.samples)
    return ds


def summarize(ds, max_seq_length, max_listed=10):
    """Warnings for the user: skipped lines (file:line), truncation."""
    out = list(ds.warnings)
    for line in ds.bad[:max_listed]:
        out.append("skipped %s" % line)
    if len(ds.bad) > max_listed:
        out.append("... and %d more skipped line(s)" % (len(ds.bad) - max_listed))
    if ds.truncated:
        out.append("%d of %d sample(s) are longer than max_seq_length %d tokens (the longest has %d): their ends "
                   "are cut off" % (ds.truncated, ds.num_raw + ds.dropped, max_seq_length, ds.longest))
    return out


def finish(ds, max_seq_length, packing):
    """Pack (when asked) and count tokens."""
    if packing:
        ds.samples = pack(ds.samples, max_seq_length)
    ds.tokens = int(sum(len(s.input_ids) for s in ds.samples))
    ds.learned_tokens = int(sum(int((s.labels != IGNORE).sum()) for s in ds.samples))
    return ds


# ---- order and batches ---------------------------------------------------------------

def split_validation(samples, fraction, seed):
    """(train, validation): a fixed `fraction` of the samples (at least one, never all) chosen by
    the seed alone."""
    n = len(samples)
    if not fraction or n < 2:
        return list(samples), []
    k = min(n - 1, max(1, int(math.ceil(fraction * n))))
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_SPLIT_STREAM, int(seed)])))
    chosen = set(train_data.permutation(rng, n)[:k])
    return [s for i, s in enumerate(samples) if i not in chosen], [s for i, s in enumerate(samples) if i in chosen]


def epoch_batches(samples, batch_size, seed, epoch):
    """Batches of one epoch, shuffled from (seed, epoch) alone (train_data.epoch_batches with
    one bucket: sd-scripts' order rules, the same on resume)."""
    return train_data.epoch_batches(samples, [((0, 0), None)] * len(samples), batch_size, seed, epoch)


def collate(samples, pad_id):
    """-> (input_ids, labels, position_ids) int64 arrays [B, T], right-padded to the longest. Padding
    is a sample of its own (positions from 0, nothing learned), so no attention mask is needed:
    causal attention keeps real tokens from seeing the padding after them."""
    t = max(len(s.input_ids) for s in samples)
    ids = np.full((len(samples), t), pad_id, dtype=np.int64)
    labels = np.full((len(samples), t), IGNORE, dtype=np.int64)
    pos = np.zeros((len(samples), t), dtype=np.int64)
    for b, s in enumerate(samples):
        n = len(s.input_ids)
        ids[b, :n] = s.input_ids
        labels[b, :n] = s.labels
        pos[b, :n] = s.position_ids
        pos[b, n:] = np.arange(t - n)
    return ids, labels, pos
