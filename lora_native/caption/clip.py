"""CLIP interrogation: rank candidate phrases against the image and compose a caption from the best
phrase of each list (subject first), e.g. "a portrait of a woman, an oil painting, impressionist,
soft window light, muted earth tones, a close-up".

Phrase lists: the package's own (`lora_native/caption/phrases/{subject,medium,style,lighting,colour,
composition}.txt`), or the user's (`phrases=` / `--phrases PATH`): a text file (one list) or a
folder of .txt files (one list each; `subject.txt` first, then the others by name). One phrase a
line; blank lines and lines starting with # are ignored. The phrases' text embeddings are computed
once, when the captioner is built.
"""
import os

import numpy as np

from . import clip_model
from ..errors import UsageError
from ..fsutil import display_path

NAME = "clip"
TITLE = "CLIP"
STYLE = "tags"
EXPECTED = clip_model.EXPECTED
HOW_TO_GET = clip_model.HOW_TO_GET
OPTIONS = {"phrases": None}
PHRASES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "phrases")
BUILTIN_LISTS = ("subject", "medium", "style", "lighting", "colour", "composition")

locate = clip_model.locate
candidates = clip_model.candidates


def read_phrase_file(path):
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError("cannot read the phrase list %s: %s" % (display_path(path), e)) from None
    phrases, seen = [], set()
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and line not in seen:
            seen.add(line)
            phrases.append(line)
    return phrases


def phrase_lists(phrases=None):
    """[(list name, [phrases])] in caption order, from the package's lists or `phrases` (a file or a
    folder of .txt files)."""
    if phrases is None:
        files = [os.path.join(PHRASES_DIR, n + ".txt") for n in BUILTIN_LISTS]
    else:
        phrases = os.path.abspath(os.path.expanduser(os.fspath(phrases)))
        if os.path.isdir(phrases):
            names = sorted(n for n in os.listdir(phrases) if n.lower().endswith(".txt") and not n.startswith("."))
            names.sort(key=lambda n: (os.path.splitext(n)[0].lower() != "subject", n.lower()))
            files = [os.path.join(phrases, n) for n in names]
            if not files:
                raise UsageError("the phrase folder %s holds no .txt lists" % display_path(phrases))
        elif os.path.isfile(phrases):
            files = [phrases]
        else:
            raise UsageError("phrase list %s does not exist" % display_path(phrases))
    lists = []
    for path in files:
        items = read_phrase_file(path)
        if not items:
            raise UsageError("the phrase list %s is empty" % display_path(path))
        lists.append((os.path.splitext(os.path.basename(path))[0], items))
    return lists


class ClipInterrogator:
    name = NAME
    style = STYLE

    def __init__(self, path=None, device=None, dtype=None, phrases=None, clip=None):
        self.lists = phrase_lists(phrases)
        self.clip = clip if clip is not None else clip_model.load_clip(path, device=device, dtype=dtype)
        self.path = self.clip.path
        self.prep = self.clip.prep
        self.on_cpu = getattr(self.clip, "on_cpu", True)
        self.torch_model = True
        # the text side of every list, once per run
        self.text = [self.clip.embed_texts(items) for _, items in self.lists]

    def rank(self, pixels):
        """-> per image, [(list name, best phrase, cosine)] in list order."""
        images = self.clip.embed_images(pixels)
        out = [[] for _ in range(len(images))]
        for (name, items), text in zip(self.lists, self.text):
            scores = images @ text.T
            best = np.argmax(scores, axis=1)
            for i, b in enumerate(best):
                out[i].append((name, items[int(b)], float(scores[i, b])))
        return out

    def caption(self, pixels):
        return [", ".join(phrase for _, phrase, _ in ranked) for ranked in self.rank(pixels)]

    def close(self):
        self.clip.close()


def load(path, device=None, dtype=None, **options):
    return ClipInterrogator(path, device=device, dtype=dtype, **options)


__all__ = ["ClipInterrogator", "load", "phrase_lists", "BUILTIN_LISTS", "PHRASES_DIR", "OPTIONS", "NAME"]
