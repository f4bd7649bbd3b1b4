"""The clean report: one record per input file, as `report.json` and a self-contained
`report.html` (counts, thumbnails of rejected files with their reason, duplicate groups
with the kept picture marked)."""
import base64
import collections
import dataclasses
import html
import json
import os
import time

from ._version import __version__
from .fsutil import display_path

NOTE_MESSAGES = {
    "wrong_extension": "content is {format}, the file name says otherwise (still used)",
    "animated": "animated ({frames} frames): the first frame is used",
    "cmyk": "CMYK JPEG converted to RGB",
    "16bit": "16-bit image reduced to 8 bits per channel",
    "alpha": "transparency composited on white",
    "exif_orientation": "rotated upright using its EXIF orientation ({orientation})",
    "trailing_data": "extra bytes after the end of the image were ignored",
    "decoder_warning": "the decoder recovered from damaged data: check this picture",
}


def _hex(value):
    return "%016x" % value


@dataclasses.dataclass
class Item:
    """What happened to one input file."""
    rel: str                    # path relative to SRC (may hold surrogate escapes)
    status: str = "kept"        # kept | rejected | duplicate
    reasons: list = dataclasses.field(default_factory=list)   # [(code, message)] why rejected
    notes: list = dataclasses.field(default_factory=list)     # [(code, message)] kept, but worth knowing
    format: str = ""
    width: int = 0
    height: int = 0
    file_size: int = 0
    metrics: dict = dataclasses.field(default_factory=dict)
    hashes: dict = dataclasses.field(default_factory=dict)
    thumb: bytes = None
    caption: str = ""
    caption_source: str = None
    duplicate_of: str = None
    duplicate_kind: str = None  # exact | near | semantic
    distance: int = None        # pHash Hamming distance to the kept picture
    similarity: float = None    # cosine of CLIP embeddings with the kept picture (with clip_dedup)
    group: int = None
    output: str = None          # path relative to DST
    output_size: tuple = None
    plan: dict = None

    @property
    def path(self):
        return display_path(self.rel)

    @classmethod
    def from_analysis(cls, rel, a):
        info = a["info"]
        item = cls(rel=rel, format=info["format"], file_size=a["file_size"], thumb=a["thumb"])
        if info["reason"] != "ok":
            item.reject(info["reason"], info["message"])
        for code in info["notes"]:
            item.notes.append((code, NOTE_MESSAGES.get(code, code).format(**info)))
        if a["decoded"]:
            item.width, item.height = a["width"], a["height"]
            item.metrics = {k: a[k] for k in ("blur", "mean_luma", "p1_luma", "p99_luma", "entropy",
                                              "color_fraction")}
            item.hashes = {"ahash": _hex(a["ahash"]), "dhash": _hex(a["dhash"]), "phash": _hex(a["phash"]),
                           "pixels": _hex(a["pixel_hash"])}
        if a["file_size"]:
            item.hashes["file"] = _hex(a["file_hash"])
        return item

    def reject(self, code, message):
        self.status = "rejected"
        self.reasons.append((code, message))

    def mark_duplicate(self, kept_path, kind, distance, group):
        self.status = "duplicate"
        self.duplicate_of, self.duplicate_kind, self.distance, self.group = kept_path, kind, distance, group

    def to_json(self):
        d = {
            "path": self.path, "status": self.status,
            "reasons": [{"code": c, "message": m} for c, m in self.reasons],
            "notes": [{"code": c, "message": m} for c, m in self.notes],
            "format": self.format, "width": self.width, "height": self.height, "file_size": self.file_size,
            "metrics": {k: round(v, 4) if isinstance(v, float) else v for k, v in self.metrics.items()},
            "hashes": self.hashes, "caption": self.caption, "caption_source": self.caption_source,
        }
        if self.status == "duplicate":
            d.update(duplicate_of=self.duplicate_of, duplicate_kind=self.duplicate_kind, distance=self.distance)
            if self.similarity is not None:
                d["similarity"] = round(self.similarity, 4)
        if self.group is not None:
            d["group"] = self.group
        if self.output:
            d.update(output=self.output, output_size=list(self.output_size))
        return d


@dataclasses.dataclass
class Report:
    """Result of lora_native.clean(): every input file with its fate."""
    src: str
    out: str
    items: list
    groups: list     # lists of item indices, the kept picture first
    warnings: list
    options: object
    dry_run: bool
    elapsed: float

    @property
    def kept(self):
        return [it for it in self.items if it.status == "kept"]

    @property
    def rejected(self):
        return [it for it in self.items if it.status == "rejected"]

    @property
    def duplicates(self):
        return [it for it in self.items if it.status == "duplicate"]

    def counts(self):
        by_reason = collections.Counter(code for it in self.rejected for code, _ in it.reasons[:1])
        return {"total": len(self.items), "kept": len(self.kept), "rejected": len(self.rejected),
                "duplicates": len(self.duplicates), "duplicate_groups": len(self.groups),
                "rejected_by_reason": dict(sorted(by_reason.items()))}

    def to_json(self):
        opts = dataclasses.asdict(self.options)
        opts["quality"]["ignore"] = sorted(opts["quality"]["ignore"])
        return {
            "tool": "lora-native clean", "version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "src": display_path(self.src), "out": display_path(self.out), "dry_run": self.dry_run,
            "elapsed_seconds": round(self.elapsed, 3), "options": opts, "counts": self.counts(),
            "warnings": self.warnings,
            "groups": [self._group_json(gid, g) for gid, g in enumerate(self.groups)],
            "items": [it.to_json() for it in self.items],
        }

    def _group_json(self, gid, members):
        d = {"id": gid, "kept": self.items[members[0]].path, "members": [self.items[i].path for i in members]}
        sims = [self.items[i].similarity for i in members[1:]]
        if any(s is not None for s in sims):
            d["similarity"] = [None if s is None else round(s, 4) for s in sims]
        return d

    def summary(self):
        c = self.counts()
        lines = ["%d images: %d kept, %d rejected, %d duplicates (in %d groups)"
                 % (c["total"], c["kept"], c["rejected"], c["duplicates"], c["duplicate_groups"])]
        for code, n in c["rejected_by_reason"].items():
            lines.append("  rejected %-18s %d" % (code, n))
        lines += ["warning: " + w for w in self.warnings]
        return "\n".join(lines)


def write_reports(report, out, write_text):
    write_text(os.path.join(out, "report.json"), json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n")
    write_text(os.path.join(out, "report.html"), render_html(report))


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
.counts span{display:inline-block;margin-right:18px;font-size:15px}.counts b{font-size:20px}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{width:150px;background:#fff;border:1px solid #ddd;
border-radius:6px;padding:6px;font-size:12px;word-break:break-all}.card img{max-width:136px;max-height:136px;
display:block;margin:0 auto 4px}.noimg{height:96px;display:flex;align-items:center;justify-content:center;
background:#eee;color:#888}.reason{color:#b00020;font-weight:600}.kept{border:3px solid #2e7d32}
.badge{background:#2e7d32;color:#fff;border-radius:3px;padding:0 4px;font-size:11px}.group{margin:12px 0;
padding:8px;background:#f0f0f0;border-radius:6px}table{border-collapse:collapse}td,th{padding:2px 10px;
text-align:left}.warn{color:#8a5a00}
"""


def _img(item):
    if item.thumb:
        return '<img src="data:image/jpeg;base64,%s" alt="">' % base64.b64encode(item.thumb).decode()
    return '<div class="noimg">no preview</div>'


def _card(item, extra="", css=""):
    e = html.escape
    size = "%dx%d" % (item.width, item.height) if item.width else item.format
    return ('<div class="card %s">%s<div>%s</div><div>%s</div>%s</div>'
            % (css, _img(item), e(item.path), e(size), extra))


def render_html(report):
    e = html.escape
    c = report.counts()
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>lora-native clean report</title>",
             "<style>%s</style></head><body>" % _CSS,
             "<h1>Dataset report: %s</h1>" % e(display_path(report.src)),
             "<p>Output: %s%s &middot; %.1f s &middot; lora-native %s</p>"
             % (e(display_path(report.out)), " (dry run: nothing written)" if report.dry_run else "",
                report.elapsed, __version__),
             "<div class='counts'><span><b>%d</b> images</span><span><b>%d</b> kept</span>"
             "<span><b>%d</b> rejected</span><span><b>%d</b> duplicates in %d groups</span></div>"
             % (c["total"], c["kept"], c["rejected"], c["duplicates"], c["duplicate_groups"])]
    if report.warnings:
        parts.append("<h2>Warnings</h2><ul>%s</ul>"
                     % "".join("<li class='warn'>%s</li>" % e(w) for w in report.warnings))
    if c["rejected_by_reason"]:
        parts.append("<h2>Rejected by reason</h2><table><tr><th>reason</th><th>files</th></tr>%s</table>"
                     % "".join("<tr><td>%s</td><td>%d</td></tr>" % (e(k), v)
                               for k, v in c["rejected_by_reason"].items()))
    rejected = report.rejected
    parts.append("<h2>Rejected files (%d)</h2>" % len(rejected))
    parts.append("<div class='grid'>%s</div>" % "".join(
        _card(it, "".join("<div class='reason'>%s</div><div>%s</div>" % (e(code), e(msg))
                          for code, msg in it.reasons))
        for it in rejected) if rejected else "<p>None.</p>")
    parts.append("<h2>Duplicate groups (%d)</h2>" % len(report.groups))
    if not report.groups:
        parts.append("<p>None.</p>")
    for gid, members in enumerate(report.groups):
        cards = []
        for n, i in enumerate(members):
            it = report.items[i]
            if n == 0:
                cards.append(_card(it, "<span class='badge'>kept</span>", "kept"))
            else:
                how = "distance %d" % it.distance
                if it.similarity is not None:
                    how += ", similarity %.3f" % it.similarity
                cards.append(_card(it, "<div>%s duplicate, %s</div>" % (e(it.duplicate_kind), how)))
        parts.append("<div class='group'><div>Group %d</div><div class='grid'>%s</div></div>" % (gid, "".join(cards)))
    noted = [it for it in report.items if it.notes]
    if noted:
        parts.append("<h2>Notes (%d files)</h2><table>%s</table>" % (len(noted), "".join(
            "<tr><td>%s</td><td>%s</td></tr>" % (e(it.path), e("; ".join(m for _, m in it.notes))) for it in noted)))
    kept = report.kept
    parts.append("<h2>Kept (%d)</h2><details><summary>show</summary><div class='grid'>%s</div></details>"
                 % (len(kept), "".join(_card(it, "<div>&rarr; %s</div>" % e(it.output or "")) for it in kept)))
    parts.append("</body></html>\n")
    return "".join(parts)
