"""What `lora-native caption` did: images captioned, skipped (with the decoder's reason, the same
reasons `lora-native clean` gives), already captioned; the most frequent tags or words; captions
shorter than 3 words; and the folder's tag counts in the form training writes to `ss_tag_frequency`."""
import collections
import dataclasses
import json
import os
import re
from types import SimpleNamespace

from ..fsutil import display_path

TOP = 15
SHORT_WORDS = 3
SHOW_SHORT = 10  # short captions listed on the terminal
# Words left out of BLIP's word counts: they say nothing about a data set.
STOP_WORDS = frozenset("a an the of and with in on at to is are there it its this that his her their some "
                       "for from by as near next".split())


@dataclasses.dataclass
class CaptionReport:
    folder: str
    output: str                  # metadata.csv, or the folder the .txt files go to
    format: str                  # csv | txt
    captioner: str
    model: str
    style: str = "tags"          # tags (comma-separated) | sentence (BLIP): how top_tags counts
    captioned: list = dataclasses.field(default_factory=list)   # [(rel, caption as written)]
    generated: dict = dataclasses.field(default_factory=dict)   # rel -> the model's text (no trigger/prefix)
    skipped: list = dataclasses.field(default_factory=list)     # [(rel, reason)]
    existing: list = dataclasses.field(default_factory=list)    # [rel] kept as they were
    tag_frequency: dict = dataclasses.field(default_factory=dict)  # ss_tag_frequency of the folder after the run
    warnings: list = dataclasses.field(default_factory=list)
    written: list = dataclasses.field(default_factory=list)     # files written
    elapsed: float = 0.0
    prep_seconds: float = 0.0    # inside prepare_images (on the prefetch thread)
    wait_seconds: float = 0.0    # the model waiting for pixels
    interrupted: bool = False

    def top_tags(self, n=TOP):
        """[(tag or word, count)] over the captions generated in this run, most frequent first."""
        counts = collections.Counter()
        for text in self.generated.values():
            if self.style == "sentence":
                words = {w for w in re.findall(r"[\w'-]+", text.lower()) if w not in STOP_WORDS}
            else:
                words = {t.strip().lower() for t in text.split(",") if t.strip()}
            counts.update(words)  # once per image
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def short_captions(self):
        """[(rel, text)] of generated captions under 3 words."""
        return [(rel, text) for rel, text in sorted(self.generated.items()) if len(text.split()) < SHORT_WORDS]

    def summary(self):
        lines = ["%s: %d captioned, %d skipped, %d already captioned (%s, %.1f s)"
                 % (display_path(self.folder), len(self.captioned), len(self.skipped), len(self.existing),
                    self.captioner, self.elapsed)]
        if self.interrupted:
            lines.append("interrupted: the captions made so far were written")
        if self.written and self.format == "csv":
            lines.append("wrote %s" % display_path(self.output))
        elif self.written:
            lines.append("wrote %d caption file(s) under %s" % (len(self.written), display_path(self.output)))
        for rel, reason in self.skipped:
            lines.append("  skipped  %s: %s" % (display_path(rel), reason))
        top = self.top_tags()
        if top:
            lines.append("most frequent %s: %s" % ("words" if self.style == "sentence" else "tags",
                                                   ", ".join("%s (%d)" % kv for kv in top)))
        short = self.short_captions()
        if short:
            lines.append("%d caption(s) shorter than %d words (check them):" % (len(short), SHORT_WORDS))
            lines.extend("  %s: %r" % (display_path(rel), text) for rel, text in short[:SHOW_SHORT])
            if len(short) > SHOW_SHORT:
                lines.append("  ... and %d more (all of them in the JSON report: --report PATH)"
                             % (len(short) - SHOW_SHORT))
        lines.extend("warning: " + w for w in self.warnings)
        return "\n".join(lines)

    def to_json(self):
        return {
            "folder": display_path(self.folder), "output": display_path(self.output), "format": self.format,
            "captioner": self.captioner, "model": display_path(self.model) if self.model else None,
            "captioned": [{"path": display_path(r), "caption": c, "generated": self.generated.get(r, c)}
                          for r, c in self.captioned],
            "skipped": [{"path": display_path(r), "reason": m} for r, m in self.skipped],
            "existing": [display_path(r) for r in self.existing],
            "top_tags": [[t, n] for t, n in self.top_tags()],
            "short_captions": [{"path": display_path(r), "caption": c} for r, c in self.short_captions()],
            "tag_frequency": self.tag_frequency,
            "warnings": list(self.warnings),
            "elapsed": round(self.elapsed, 3), "prep_seconds": round(self.prep_seconds, 3),
            "wait_seconds": round(self.wait_seconds, 3), "interrupted": self.interrupted,
        }

    def write_json(self, path):
        from ..fsutil import atomic_write_text
        atomic_write_text(path, json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n")


def folder_tag_frequency(folder, captions):
    """{rel: caption} of a folder -> ss_tag_frequency as training computes it (lora_native.train.data:
    the dataset folder's name, or the kohya `<N>_<concept>` folder, as the key)."""
    from ..train.data import KOHYA_FOLDER, tag_frequency

    default = os.path.basename(os.path.abspath(folder).rstrip(os.sep)) or folder
    samples = []
    for rel, text in captions.items():
        top = rel.split(os.sep)[0] if os.sep in rel else None
        name = top if top and KOHYA_FOLDER.match(top) else default
        samples.append(SimpleNamespace(folder=name, caption=text))
    return tag_frequency(samples)
