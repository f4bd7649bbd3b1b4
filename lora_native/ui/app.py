"""The training page: `build_ui(host) -> gradio.Blocks`.

Clean a folder, caption it with a local model and edit the captions, pick a base model, set the main options (or paste YAML), train
in the background with live progress, get the LoRA in the host's folder and its prompt tag.
The same Blocks serve `lora-native ui` and the WebUI tab; the host (ui/host.py) says where
things live. gradio is imported here only, so `import lora_native` works without it.
"""
import inspect
import io
import os
import time

from .jobs import CANCELLED, DONE, FAILED, RUNNING, JobBusy, JobRunner

MIXED_PRECISION = ["no", "fp16", "bf16"]


def _gradio():
    try:
        import gradio as gr
    except ImportError:
        raise ImportError("the training page needs gradio: pip install gradio  (or pip install 'lora-native[ui]')") \
            from None
    return gr


def _kw(cls, **options):
    """Only the options this gradio version knows (WebUI ships gradio 3/4, we test 6)."""
    try:
        params = inspect.signature(cls.__init__ if isinstance(cls, type) else cls).parameters
    except (TypeError, ValueError):
        return options
    return {k: v for k, v in options.items() if k in params}


def default_output_folder(src):
    """Where Clean writes when no folder is given: a sibling `<src>_clean`."""
    src = os.path.abspath(os.path.expanduser(src.rstrip("/\\")))
    return src + "_clean"


def _thumb(item, size=160):
    from PIL import Image
    if item.thumb:
        try:
            return Image.open(io.BytesIO(item.thumb)).convert("RGB")
        except Exception:  # a thumbnail we cannot read: show the placeholder
            pass
    return Image.new("RGB", (size, size), (200, 200, 200))


def report_galleries(report):
    """(rejected, duplicates): lists of (PIL image, caption) for gr.Gallery."""
    rejected = [(_thumb(it), "%s: %s" % (it.path, "; ".join(m for _, m in it.reasons))) for it in report.rejected]
    dups = []
    for gid, group in enumerate(report.groups):
        for n, index in enumerate(group):
            it = report.items[index]
            if n == 0:
                dups.append((_thumb(it), "group %d KEPT: %s" % (gid + 1, it.path)))
            else:
                dups.append((_thumb(it), "group %d duplicate (%s, distance %s): %s"
                             % (gid + 1, it.duplicate_kind, it.distance, it.path)))
    return rejected, dups


def report_markdown(report):
    c = report.counts()
    lines = ["**%d** images: **%d** kept, **%d** rejected, **%d** duplicates in %d groups (%.1f s)"
             % (c["total"], c["kept"], c["rejected"], c["duplicates"], c["duplicate_groups"], report.elapsed)]
    for code, n in c["rejected_by_reason"].items():
        lines.append("- rejected `%s`: %d" % (code, n))
    lines += ["- warning: %s" % w for w in report.warnings]
    lines.append("\nCleaned set: `%s` (full report: `%s`)" % (report.out, os.path.join(report.out, "report.html")))
    return "\n".join(lines)


def read_caption_rows(folder):
    """[[file, caption]] from a cleaned folder's metadata.csv (empty when there is none)."""
    from ..captions import read_metadata_csv
    path = os.path.join(folder, "metadata.csv")
    if not os.path.isfile(path):
        return []
    return [[name, caption] for name, caption in sorted(read_metadata_csv(path).items())]


def _rows(table):
    """gr.Dataframe's value (pandas, or lists in old gradio) -> [(file, caption)]."""
    if table is None:
        return []
    if hasattr(table, "values") and hasattr(table, "columns"):
        table = table.values.tolist()
    elif isinstance(table, dict):
        table = table.get("data", [])
    return [(str(r[0]).strip(), "" if r[1] is None else str(r[1])) for r in table if r and str(r[0]).strip()]


def save_captions(folder, table, trigger=""):
    """Write metadata.csv (atomically) in `folder` from the table, with the trigger word
    prepended where missing. Returns the number of rows."""
    from ..captions import format_metadata_csv, with_trigger
    from ..errors import UsageError
    from ..fsutil import atomic_write_text
    if not folder or not os.path.isdir(folder):
        raise UsageError("no training folder %r: clean a dataset first (or type the folder)" % folder)
    rows = [(name, with_trigger(caption, trigger)) for name, caption in _rows(table)]
    if not rows:
        raise UsageError("the caption table is empty")
    missing = [name for name, _ in rows if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise UsageError("no such image in %s: %s" % (folder, ", ".join(missing[:5])))
    atomic_write_text(os.path.join(folder, "metadata.csv"), format_metadata_csv(rows))
    return len(rows)


CAPTIONERS = ["wd14", "blip", "clip"]


def caption_folder(host, folder, captioner, model="", overwrite=False, trigger="", progress=None):
    """Caption the training folder into its metadata.csv (rows kept, captions kept unless
    overwrite) with a local model: `model`, else the host's `<models>/captioners/<captioner>/`.
    Returns (caption rows for the table, report markdown)."""
    from ..caption import caption
    from ..errors import UsageError
    if not folder or not os.path.isdir(os.path.expanduser(folder)):
        raise UsageError("no training folder %r: clean a dataset first (or type the folder)" % folder)
    folder = os.path.expanduser(folder)
    report = caption(folder, captioner=captioner, model=(model or "").strip() or None, overwrite=bool(overwrite),
                     trigger=trigger or "", search_dirs=host.caption_search_dirs(), progress=progress)
    lines = ["**%d** captioned, **%d** skipped, **%d** already captioned (%s, %.1f s)"
             % (len(report.captioned), len(report.skipped), len(report.existing), captioner, report.elapsed)]
    lines += ["- skipped `%s`: %s" % (rel, reason) for rel, reason in report.skipped]
    top = report.top_tags()
    if top:
        lines.append("- most frequent: " + ", ".join("%s (%d)" % kv for kv in top))
    short = report.short_captions()
    if short:
        lines.append("- shorter than 3 words: " + ", ".join("`%s`" % rel for rel, _ in short))
    return read_caption_rows(folder), "\n".join(lines)


def training_values(host, fields, yaml_text=""):
    """The config dict of a run: the page's fields, then the Advanced YAML over them. Output:
    checkpoints in `<lora_dir>/<output_name>_training/`, the final file copied to the LoRA folder."""
    from .. import _native
    from ..config import _resolve_path
    from ..errors import UsageError
    name = (fields.get("output_name") or "").strip()
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise UsageError("output name %r: use a plain file name (no folder), e.g. my_style" % name)
    if not fields.get("base_model"):
        raise UsageError("choose a base model (put .safetensors files in the models folder, then Refresh)")
    if not fields.get("train_data_dir"):
        raise UsageError("which images? Clean a dataset first, or type the training folder")
    values = {
        "base_model": host.resolve_base_model(fields["base_model"]),
        "train_data_dir": os.path.abspath(fields["train_data_dir"]),
        "output_name": name,
        "output_dir": os.path.join(host.lora_dir(), name + "_training"),
        "lora_rank": int(fields["lora_rank"]),
        "learning_rate": float(fields["learning_rate"]),
        "epochs": int(fields["epochs"]),
        "max_train_steps": int(fields["max_train_steps"] or 0),
        "batch_size": int(fields["batch_size"]),
        "resolution": int(fields["resolution"]),
        "save_steps": int(fields["save_steps"] or 0),
        "mixed_precision": fields["mixed_precision"],
    }
    if fields.get("lora_alpha"):
        values["lora_alpha"] = float(fields["lora_alpha"])
    for key, value in (fields.get("extra") or {}).items():
        values.setdefault(key, value)
    if yaml_text and yaml_text.strip():
        parsed = _native.config_parse(yaml_text.encode("utf-8"), "Advanced YAML")
        for key, (value, _, _) in parsed.items():
            values[key] = _resolve_path(key, value, None)
    return values


def _fmt_time(seconds):
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return "%d:%02d:%02d" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


def progress_markdown(s):
    if s["state"] == "idle":
        return "Not training."
    head = {RUNNING: "Training", DONE: "Done", FAILED: "Failed", CANCELLED: "Cancelled"}[s["state"]]
    line = "**%s**: step %d / %d" % (head, s["step"], s["total"])
    if s["state"] == RUNNING and s["step"]:
        line += " · %.2f it/s · ETA %s" % (s["its"], _fmt_time(s["eta"]))
    if s["loss"]:
        line += " · loss %.4f" % s["loss"][-1][1]
    line += " · elapsed %s" % _fmt_time(s["elapsed"])
    text = line + "\n\n" + s["message"]
    if s["state"] == FAILED:
        text += "\n\n**Error:** `%s`" % s["error"]
    return text


def build_ui(host, defaults=None, runner=None):
    """The training page for `host` (a lora_native.ui.host.Host). defaults: initial field
    values (dataset, clean_resolution, output_name, lora_rank, ..., extra: config keys added
    to every run). runner: a JobRunner to share (one run at a time); a new one by default."""
    gr = _gradio()
    import pandas as pd

    d = {"dataset": "", "clean_out": "", "clean_resolution": "512", "trigger": "", "output_name": "my_lora",
         "lora_rank": 16, "lora_alpha": 0, "learning_rate": 1e-4, "epochs": 10, "max_train_steps": 0,
         "batch_size": 1, "resolution": 512, "save_steps": 0, "mixed_precision": "no", "base_model": None,
         "extra": {}}
    d.update(host.defaults())
    d.update(defaults or {})
    runner = runner or JobRunner()
    models = host.list_base_models()
    if d["base_model"] is None and models:
        d["base_model"] = models[0]

    def error_md(e):
        return "**Error:** %s" % e

    def do_clean(src, out, resolution, trigger):
        from .. import clean
        try:
            if not src or not os.path.isdir(os.path.expanduser(src)):
                raise FileNotFoundError("no such folder: %r (type the folder of your images)" % src)
            out = out.strip() if out and out.strip() else default_output_folder(src)
            report = clean(os.path.expanduser(src), out, resolution=resolution or "512", trigger=trigger or "")
            rejected, dups = report_galleries(report)
            return (report_markdown(report), rejected, dups, read_caption_rows(report.out), report.out,
                    out, "")
        except Exception as e:
            gr.Warning("Clean failed: %s" % e)
            return ("", [], [], [], gr.skip(), gr.skip(), error_md(e))

    def do_load_captions(folder):
        try:
            return read_caption_rows(folder), ""
        except Exception as e:
            return [], error_md(e)

    def do_save_captions(folder, table, trigger):
        try:
            n = save_captions(folder, table, trigger)
            return read_caption_rows(folder), "Saved %d captions to `%s`." % (n, os.path.join(folder, "metadata.csv"))
        except Exception as e:
            gr.Warning("Save failed: %s" % e)
            return gr.skip(), error_md(e)

    def do_caption(folder, captioner, model, overwrite, trigger, progress=gr.Progress()):
        try:
            rows, md = caption_folder(host, folder, captioner, model, overwrite, trigger,
                                      progress=lambda stage, done, total: progress((done, total), desc="captioning"))
            return rows, md, ""
        except Exception as e:
            gr.Warning("Caption failed: %s" % e)
            return gr.skip(), "", error_md(e)

    def do_refresh_loras():
        try:
            done = host.refresh_loras()
        except Exception as e:
            return error_md(e)
        return ("The LoRA list is refreshed: the new file can be used right away." if done else
                "Nothing to refresh here: LoRA files in `%s` are read when a prompt uses them." % host.lora_dir())

    def do_refresh(current):
        names = host.list_base_models()
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    field_names = ["base_model", "train_data_dir", "output_name", "lora_rank", "lora_alpha", "learning_rate",
                   "epochs", "max_train_steps", "batch_size", "resolution", "save_steps", "mixed_precision"]

    def fields_of(values):
        f = dict(zip(field_names, values))
        f["extra"] = d["extra"]
        return f

    def do_export(*values):
        from ..config import Config, format_yaml
        try:
            return format_yaml(Config.from_dict(training_values(host, fields_of(values)))), ""
        except Exception as e:
            return gr.skip(), error_md(e)

    def do_import(file):
        if file is None:
            return gr.skip(), ""
        path = file if isinstance(file, str) else getattr(file, "name", None) or file.get("path")
        try:
            with open(path, encoding="utf-8") as f:
                return f.read(), ""
        except Exception as e:
            return gr.skip(), error_md(e)

    def do_train(yaml_text, *values):
        from ..config import Config
        try:
            config = Config.from_dict(training_values(host, fields_of(values), yaml_text))
            runner.start(config, final_dir=host.lora_dir(), on_done=host.after_training)
            return "Started: checkpoints in `%s`." % config.output_dir
        except JobBusy as e:
            gr.Warning(str(e))
            return error_md(e)
        except Exception as e:
            gr.Warning("Cannot start: %s" % e)
            return error_md(e)

    def do_cancel():
        return "Cancelling: a checkpoint is saved first." if runner.cancel() else "Nothing is training."

    def poll(last):
        s = runner.snapshot()
        key = (id(runner.job), s["state"], s["step"], len(s["checkpoints"]))
        if key == last:
            return (gr.skip(),) * 5 + (last,)
        plot = pd.DataFrame(s["loss"] or [], columns=["step", "loss"])
        ckpts = "\n".join("- `%s`" % c for c in s["checkpoints"]) or "No checkpoints yet."
        path = s["lora_path"] or ""
        tag = host.tag_for(path) if path else ""
        return progress_markdown(s), plot, ckpts, path, tag, key

    with gr.Blocks(title="lora-native: train a LoRA", analytics_enabled=False) as page:
        gr.Markdown("## Train a LoRA\nClean a folder of images, check the captions, choose a base model and train. "
                    "The LoRA goes to `%s`." % host.lora_dir())
        error = gr.Markdown("", elem_id="ln-error")
        with gr.Accordion("1. Dataset", open=True):
            with gr.Row():
                dataset = gr.Textbox(d["dataset"], label="Image folder", elem_id="ln-dataset", scale=3)
                clean_out = gr.Textbox(d["clean_out"], label="Cleaned folder (default: <image folder>_clean)",
                                       elem_id="ln-clean-out", scale=3)
                clean_res = gr.Textbox(str(d["clean_resolution"]), label="Crop size", elem_id="ln-clean-resolution",
                                       scale=1)
                trigger = gr.Textbox(d["trigger"], label="Trigger word", elem_id="ln-trigger", scale=1)
            clean_btn = gr.Button("Clean", variant="primary", elem_id="ln-clean")
            report_md = gr.Markdown("", elem_id="ln-report")
            with gr.Row():
                rejected_gal = gr.Gallery(label="Rejected (with the reason)", elem_id="ln-rejected",
                                          **_kw(gr.Gallery, columns=4, height=260))
                dups_gal = gr.Gallery(label="Duplicate groups (KEPT marks the one used)", elem_id="ln-duplicates",
                                      **_kw(gr.Gallery, columns=4, height=260))
            with gr.Row():
                data_dir = gr.Textbox(d.get("train_data_dir", ""), label="Training folder (the cleaned set)",
                                      elem_id="ln-train-data", scale=4)
                load_caps = gr.Button("Load captions", elem_id="ln-load-captions", scale=1)
            with gr.Row():
                captioner = gr.Dropdown(CAPTIONERS, value=d.get("captioner", "wd14"), label="Captioner",
                                        elem_id="ln-captioner", scale=1)
                caption_model = gr.Textbox(d.get("caption_model", ""), elem_id="ln-caption-model", scale=3,
                                           label="Caption model folder (empty: <models>/captioners/<captioner>/)")
                caption_overwrite = gr.Checkbox(False, label="Replace existing captions",
                                                elem_id="ln-caption-overwrite", scale=1)
                caption_btn = gr.Button("Caption", elem_id="ln-caption", scale=1)
            caption_md = gr.Markdown("", elem_id="ln-caption-report")
            captions = gr.Dataframe(headers=["file", "caption"], label="Captions (editable)", elem_id="ln-captions",
                                    **_kw(gr.Dataframe, interactive=True, wrap=True, column_count=2))
            save_caps = gr.Button("Save captions", elem_id="ln-save-captions")
        with gr.Accordion("2. Training", open=True):
            with gr.Row():
                base_model = gr.Dropdown(models, value=d["base_model"], label="Base model", elem_id="ln-base-model",
                                         scale=4, **_kw(gr.Dropdown, allow_custom_value=True))
                refresh = gr.Button("Refresh", elem_id="ln-refresh", scale=1)
            with gr.Row():
                output_name = gr.Textbox(d["output_name"], label="Output name", elem_id="ln-output-name")
                rank = gr.Number(d["lora_rank"], label="Rank", precision=0, elem_id="ln-rank")
                alpha = gr.Number(d["lora_alpha"], label="Alpha (0: = rank)", elem_id="ln-alpha")
                lr = gr.Number(d["learning_rate"], label="Learning rate", elem_id="ln-lr")
            with gr.Row():
                epochs = gr.Number(d["epochs"], label="Epochs", precision=0, elem_id="ln-epochs")
                steps = gr.Number(d["max_train_steps"], label="Max steps (0: epochs decide)", precision=0,
                                  elem_id="ln-steps")
                batch = gr.Number(d["batch_size"], label="Batch size", precision=0, elem_id="ln-batch")
                resolution = gr.Number(d["resolution"], label="Resolution", precision=0, elem_id="ln-resolution")
                save_steps = gr.Number(d["save_steps"], label="Checkpoint every N steps (0: end only)", precision=0,
                                       elem_id="ln-save-steps")
                precision = gr.Dropdown(MIXED_PRECISION, value=d["mixed_precision"], label="Mixed precision",
                                        elem_id="ln-precision")
            with gr.Accordion("Advanced (YAML: its keys override the fields above)", open=False):
                yaml_box = gr.Textbox("", label="Config YAML", lines=10, elem_id="ln-yaml")
                with gr.Row():
                    yaml_file = gr.File(label="Import a YAML file", file_types=[".yaml", ".yml"],
                                        elem_id="ln-yaml-file")
                    export_btn = gr.Button("Export the current settings as YAML", elem_id="ln-yaml-export")
            with gr.Row():
                train_btn = gr.Button("Train", variant="primary", elem_id="ln-train")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="ln-cancel")
            status = gr.Markdown("", elem_id="ln-status")
            progress = gr.Markdown("Not training.", elem_id="ln-progress")
            plot = gr.LinePlot(pd.DataFrame({"step": [], "loss": []}), x="step", y="loss", title="loss",
                               elem_id="ln-loss-plot")
            ckpts = gr.Markdown("", elem_id="ln-checkpoints")
            with gr.Row():
                lora_path = gr.Textbox("", label="LoRA file", elem_id="ln-lora-path", interactive=False,
                                       **_kw(gr.Textbox, buttons=["copy"], show_copy_button=True))
                tag = gr.Textbox("", label="Prompt tag", elem_id="ln-tag", interactive=False,
                                 **_kw(gr.Textbox, buttons=["copy"], show_copy_button=True))
                refresh_loras = gr.Button("Refresh LoRA list", elem_id="ln-refresh-loras", scale=0)

        fields = [base_model, data_dir, output_name, rank, alpha, lr, epochs, steps, batch, resolution, save_steps,
                  precision]
        clean_btn.click(do_clean, [dataset, clean_out, clean_res, trigger],
                        [report_md, rejected_gal, dups_gal, captions, data_dir, clean_out, error])
        load_caps.click(do_load_captions, [data_dir], [captions, error])
        caption_btn.click(do_caption, [data_dir, captioner, caption_model, caption_overwrite, trigger],
                          [captions, caption_md, error])
        save_caps.click(do_save_captions, [data_dir, captions, trigger], [captions, status])
        refresh.click(do_refresh, [base_model], [base_model])
        refresh_loras.click(do_refresh_loras, [], [status])
        export_btn.click(do_export, fields, [yaml_box, error])
        yaml_file.upload(do_import, [yaml_file], [yaml_box, error])
        train_btn.click(do_train, [yaml_box] + fields, [status])
        cancel_btn.click(do_cancel, [], [status])
        last = gr.State(None)
        outputs = [progress, plot, ckpts, lora_path, tag, last]
        if hasattr(gr, "Timer"):
            gr.Timer(1.0).tick(poll, [last], outputs, **_kw(gr.Timer.tick, show_progress="hidden"))
        else:  # gradio 3 (A1111): polling through every=
            page.load(poll, [last], outputs, every=1)
    page.ln_runner = runner  # for hosts and tests
    return page


def launch(host, server_name="127.0.0.1", server_port=7860, defaults=None, quiet=False, block=True):
    """Serve the page; returns the Blocks (already serving when block is False)."""
    page = build_ui(host, defaults)
    page.queue()
    page.launch(server_name=server_name, server_port=server_port, prevent_thread_lock=not block, quiet=quiet,
                **_kw(type(page).launch, footer_links=[]))
    return page
