"""`lora-native` command line: one subcommand per module (clean -> dataset, caption -> caption,
demo -> demo, install-webui/install-comfy -> install_hosts)."""
import argparse
import os
import sys

from .errors import LoraNativeError
from .quality import CHECKS


def _progress_bar():
    """A progress callback drawing tqdm bars on a terminal (nothing when not a TTY)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None, lambda: None
    bars = {}

    def update(stage, done, total):
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="img", disable=None, file=sys.stderr,
                                     dynamic_ncols=True)
        bar.update(done - bar.n)

    def close():
        for bar in bars.values():
            bar.close()
    return update, close


def _add_clean(sub):
    p = sub.add_parser("clean", help="check, deduplicate, crop and caption a folder of images",
                       description="Walk SRC (recursively), reject broken/tiny/blurry/blank files with a reason "
                                   "each, group exact and near duplicates (keeping one per group), resize and "
                                   "crop the rest into DST with metadata.csv, report.json and report.html. "
                                   "SRC is never modified.")
    p.add_argument("src", help="folder of images (captions: .txt beside each image or SRC/metadata.csv)")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier clean output)")
    p.add_argument("--resolution", default="512", help="crop size: 512, 768 or WxH (bucket area with --bucket)")
    p.add_argument("--bucket", action="store_true", help="aspect-ratio buckets (sd-scripts rules) instead of "
                                                         "one crop size")
    p.add_argument("--bucket-no-upscale", action="store_true", help="with --bucket: never enlarge")
    p.add_argument("--fit", choices=("crop", "pad"), default="crop", help="crop to fill (default) or pad with white")
    p.add_argument("--near-dup", type=int, default=6, metavar="T",
                   help="near-duplicate pHash Hamming distance (default 6 of 64 bits; -1 disables)")
    p.add_argument("--keep", choices=("largest", "sharpest"), default="largest",
                   help="which picture of a duplicate group is kept")
    p.add_argument("--clip-dedup", type=float, nargs="?", const=0.95, default=0.0, metavar="COS",
                   help="also group pictures whose CLIP image embeddings have cosine similarity >= COS "
                        "(default 0.95 when given without a value); needs --clip-model")
    p.add_argument("--clip-model", default=None, metavar="PATH",
                   help="local CLIP model folder (transformers layout) for --clip-dedup "
                        "(default: $LORA_NATIVE_CLIP_MODEL); nothing is downloaded")
    p.add_argument("--embedding-cache", default=None, metavar="DIR",
                   help="where CLIP embeddings are cached (default: ~/.cache/lora-native/embeddings)")
    p.add_argument("--no-embedding-cache", action="store_true", help="embed every picture, cache nothing")
    p.add_argument("--device", default=None, help="torch device for the CLIP model (default: cuda when present)")
    p.add_argument("--min-side", type=int, default=512, help="reject images whose short side is smaller")
    p.add_argument("--max-aspect", type=float, default=3.0, help="reject images more elongated than this")
    p.add_argument("--blur-threshold", type=float, default=None, help="reject when sharpness is under this "
                                                                      "(default 60)")
    p.add_argument("--reject-grayscale", action="store_true", help="reject pictures without colour")
    p.add_argument("--ignore-check", action="append", default=[], choices=sorted(CHECKS), metavar="CHECK",
                   help="never apply this check (repeatable): " + ", ".join(sorted(CHECKS)))
    p.add_argument("--trigger", default="", help="trigger word prepended to every caption (e.g. sks)")
    p.add_argument("--caption-extension", default=".txt", help="caption files beside images (default .txt)")
    p.add_argument("--captions", choices=("csv", "txt", "both"), default="csv",
                   help="write metadata.csv (default), .txt files, or both")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="output image format")
    p.add_argument("--dry-run", action="store_true", help="analyze and report on the terminal; write nothing")
    p.add_argument("--threads", type=int, default=0, help="worker threads (default: all cores)")
    p.add_argument("--strict", action="store_true", help="exit with status 3 when any file was rejected")
    p.set_defaults(func=_cmd_clean)


def _cmd_clean(args):
    from .dataset import clean
    options = dict(resolution=args.resolution, bucket=args.bucket, bucket_no_upscale=args.bucket_no_upscale,
                   fit=args.fit, near_dup=args.near_dup, keep=args.keep, min_side=args.min_side,
                   max_aspect=args.max_aspect, reject_grayscale=args.reject_grayscale,
                   ignore=args.ignore_check, trigger=args.trigger, caption_extension=args.caption_extension,
                   caption_output=args.captions, output_format=args.format, dry_run=args.dry_run,
                   threads=args.threads, clip_dedup=args.clip_dedup, clip_model=args.clip_model,
                   embedding_cache="" if args.no_embedding_cache else args.embedding_cache, device=args.device)
    if args.blur_threshold is not None:
        options["blur"] = args.blur_threshold
    update, close = _progress_bar()
    try:
        report = clean(args.src, args.out, progress=update, **options)
    finally:
        close()
    print(report.summary())
    for it in report.rejected:
        code, message = it.reasons[0]
        print("  rejected  %s: %s (%s)" % (it.path, message, code))
    if report.dry_run:
        print("dry run: nothing was written")
    else:
        print("wrote %d images to %s" % (len(report.kept), report.out))
        print("report: %s" % os.path.join(report.out, "report.html"))
    if report.rejected:
        print("warning: %d file(s) rejected; see the report for each reason" % len(report.rejected),
              file=sys.stderr)
        if args.strict:
            return 3
    return 0


def add_caption_arguments(p, input_option=False):
    """The caption options, shared by `lora-native caption` and tools/auto_label.py (which names the
    folder with --input, as the seed's script did)."""
    if input_option:
        p.add_argument("--input", dest="dir", metavar="DIR", help="folder of images (searched recursively)")
    else:
        p.add_argument("dir", nargs="?", metavar="DIR", help="folder of images (searched recursively; default: "
                                                            "train_data_dir of --config)")
    p.add_argument("--captioner", choices=("blip", "wd14", "clip"), default=None,
                   help="blip: a sentence; wd14: danbooru tags (onnxruntime); clip: best phrases of lists "
                        "(default: the --config's captioner, else blip)")
    p.add_argument("--model", metavar="PATH",
                   help="local model folder (or WD14 .onnx file); default: $LORA_NATIVE_<BLIP|WD14|CLIP>_MODEL, "
                        "then --config's caption_model. Nothing is ever downloaded")
    p.add_argument("--format", choices=("csv", "txt"), default=None,
                   help="csv: one metadata.csv (filename,prompt); txt: a .txt beside each image (kohya). Default: "
                        "csv, or txt when --output is a folder")
    p.add_argument("--output", metavar="PATH", help="metadata.csv to write or merge into (default DIR/metadata.csv), "
                                                    "or a folder for .txt files")
    p.add_argument("--trigger", default="", help="trigger word(s) put first in every caption (e.g. sks)")
    p.add_argument("--prefix", default="", help="text put before each generated caption")
    p.add_argument("--overwrite", action="store_true", help="replace existing captions (default: keep them)")
    p.add_argument("--batch-size", type=int, default=8, help="images per model call (default 8)")
    p.add_argument("--threads", type=int, default=0, help="threads preparing images (default: all cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--config", metavar="YAML", help="training config: its captioner, caption_model, "
                                                    "train_data_dir and metadata_path keys are used")
    p.add_argument("--report", metavar="PATH", help="also write the report as JSON here")
    g = p.add_argument_group("BLIP options")
    g.add_argument("--max-new-tokens", type=int, default=None, help="longest caption in tokens (default 30)")
    g.add_argument("--num-beams", type=int, default=None, help="beam search width (default 3)")
    g.add_argument("--prompt", default=None, help="text the caption continues, e.g. 'a picture of'")
    g = p.add_argument_group("WD14 options")
    g.add_argument("--general-threshold", type=float, default=None, help="general tags at this probability "
                                                                         "or more (default 0.35)")
    g.add_argument("--character-threshold", type=float, default=None, help="character tags likewise (default 0.85)")
    g.add_argument("--exclude-tags", default=None, metavar="TAGS", help="comma-separated tags never written")
    g.add_argument("--include-ratings", action="store_true", default=None,
                   help="put the most probable rating tag (general, sensitive, ...) first")
    g = p.add_argument_group("CLIP options")
    g.add_argument("--phrases", default=None, metavar="PATH",
                   help="phrase list (.txt, one a line) or folder of lists to rank instead of the built-in ones")


_CAPTIONER_OPTIONS = {"max_new_tokens": "blip", "num_beams": "blip", "prompt": "blip",
                      "general_threshold": "wd14", "character_threshold": "wd14", "exclude_tags": "wd14",
                      "include_ratings": "wd14", "phrases": "clip"}


def _add_caption(sub):
    p = sub.add_parser("caption", help="caption a folder of images with a local BLIP, WD14 or CLIP model",
                       description="Write a caption for every image of DIR that has none: into DIR/metadata.csv "
                                   "(filename,prompt; existing rows kept) or a .txt beside each image. Existing "
                                   "captions are kept unless --overwrite. Models are local folders only.")
    add_caption_arguments(p)
    p.set_defaults(func=run_caption)


def run_caption(args):
    """Run a parsed caption command line (lora-native caption, tools/auto_label.py)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # this process only: nothing is fetched
    from .errors import UsageError
    folder, output = args.dir, args.output
    if args.config and (not folder or (not output and args.format != "txt")):
        from .config import read_config_keys
        keys = read_config_keys(args.config, ("train_data_dir", "metadata_path"))
        folder = folder or keys.get("train_data_dir")
        if not output and args.format != "txt" and folder == keys.get("train_data_dir"):
            output = keys.get("metadata_path")
    if not folder:
        raise UsageError("which folder? lora-native caption DIR (or --config with train_data_dir)")
    options = {key: getattr(args, key) for key in _CAPTIONER_OPTIONS if getattr(args, key) is not None}
    from .caption import caption, models
    chosen = args.captioner or models.read_config_keys(args.config)[0] or "blip"
    wrong = [k for k in options if _CAPTIONER_OPTIONS[k] != chosen]
    if wrong:
        raise UsageError("--%s %s for the %s captioner, not %s" % (
            wrong[0].replace("_", "-"), "is an option" if len(wrong) == 1 else "(and others) are options",
            _CAPTIONER_OPTIONS[wrong[0]], chosen))
    _quiet_transformers()
    update, close = _progress_bar()
    try:
        report = caption(folder, captioner=chosen, model=args.model, format=args.format, output=output,
                         trigger=args.trigger, prefix=args.prefix, overwrite=args.overwrite,
                         batch_size=args.batch_size, threads=args.threads, device=args.device, progress=update,
                         config=args.config, **options)
    finally:
        close()
    print(report.summary())
    if args.report:
        report.write_json(args.report)
        print("report: %s" % args.report)
    return 0


def _quiet_transformers():
    """No weight-loading bars or torchvision notices from transformers on our terminal."""
    try:
        import transformers.utils.logging as tlog
    except ImportError:
        return
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


def _add_demo(sub):
    p = sub.add_parser("demo", help="generate a small messy image set and clean it",
                       description="Generate procedural pictures of one style with planted duplicates, a blurry "
                                   "one, a tiny one and broken files, clean them, then train a LoRA on a tiny "
                                   "demo model on the CPU and inspect the file.")
    p.add_argument("--out", default="demo_output", help="folder for the demo (default ./demo_output)")
    p.add_argument("--count", type=int, default=24, help="number of good pictures (default 24)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-train", action="store_true", help="stop after cleaning")
    p.add_argument("--caption-model", default=None, metavar="PATH",
                   help="also auto-caption the clean set with this local model (BLIP or CLIP folder, WD14 "
                        "folder or .onnx; default: $LORA_NATIVE_CAPTION_MODEL)")
    p.add_argument("--captioner", choices=("blip", "wd14", "clip"), default=None,
                   help="which captioner the model is (default: guessed from the folder)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args):
    from .demo import run_demo
    return run_demo(args.out, count=args.count, seed=args.seed, train_model=not args.no_train,
                    captioner=args.captioner, caption_model=args.caption_model)


def _add_info(sub):
    p = sub.add_parser("info", help="show the build: version, SIMD, CUDA, libraries, GPUs")
    p.add_argument("--cuda-selftest", action="store_true", help="run a kernel on each GPU to check the build")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args):
    from . import _native, build_info
    info = build_info()
    for key, value in info.items():
        print("%-12s %s" % (key, ", ".join(value) if isinstance(value, list) else value))
    devices, why = _native.cuda_devices()
    if devices:
        for d in devices:
            print("gpu %d       %s (sm_%d%d)" % (d["index"], d["name"], *d["capability"]))
            if args.cuda_selftest:
                _native.cuda_selftest(d["index"])
                print("            self-test passed")
    else:
        print("gpus         none (%s)" % why)
    return 0


def _add_train(sub):
    p = sub.add_parser("train", help="train a LoRA from a YAML config",
                       description="Train a LoRA for SD1.5 or SDXL, or for a causal language model (task_type: "
                                   "text-generation), from a YAML config. Any config key can be given on the command "
                                   "line to override the file: --learning_rate 5e-5 --lora_rank 8.")
    p.add_argument("--config", help="YAML config file (see examples/); may also be given as the first argument")
    p.add_argument("--merge", action="store_true", help="text-generation: also write <output_name>-merged/, the base "
                                                        "model with the LoRA merged in (config key merge_output)")
    p.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help="data-parallel training in N processes on this machine (one per GPU; gloo processes on the "
                        "CPU), started with accelerate launch; batch_size is per process. For several machines, "
                        "run `accelerate launch ... train.py --config X.yaml` on each (see the README)")
    p.set_defaults(func=_cmd_train)


def _parse_overrides(extra):
    """['--lora_rank', '8', '--learning-rate=5e-5'] -> {'lora_rank': '8', 'learning_rate': '5e-5'}."""
    from .errors import UsageError
    overrides, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or arg == "--":
            raise UsageError("unexpected argument %r (overrides are --key value)" % arg)
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 >= len(extra):
                raise UsageError("--%s needs a value" % key)
            value = extra[i + 1]
            i += 1
        overrides[key] = value
        i += 1
    return overrides


def _cmd_train(args):
    from .errors import UsageError
    from .train.loop import TrainingInterrupted, train
    config = args.config
    if not config and args.overrides and not args.overrides[0].startswith("-"):
        config = args.overrides.pop(0)  # lora-native train my.yaml
    if not config:
        raise UsageError("which config? lora-native train --config my.yaml (examples/ has commented ones)")
    overrides = _parse_overrides(args.overrides)
    if args.merge:
        overrides["merge_output"] = True
    if args.num_processes is not None and args.num_processes < 1:
        raise UsageError("--num-processes must be at least 1")
    from .train.distributed import launched
    if args.num_processes and args.num_processes > 1 and not launched():
        return _launch_train(args.num_processes, config, args.overrides, args.merge, overrides)
    try:
        result = train(config, **overrides)
    except TrainingInterrupted as e:
        if os.environ.get("RANK", "0") in ("", "0"):  # with several processes, the main one says it
            print(str(e), file=sys.stderr)
        return 130
    if result.process_index != 0:
        return 0  # the main process reports
    print("trained %d steps (%d epochs) in %.0f s; final loss %.4f" % (result.steps, result.epochs, result.elapsed,
                                                                      result.final_loss))
    val = "  (validation loss %.4f)" % result.last_loss if result.last_loss is not None else ""
    best = None
    if result.best_step is not None:
        best = "best: step %d, validation loss %.4f%s" % (result.best_step, result.best_loss,
                                                          ": %s" % result.best_path if result.best_path else "")
    if result.task_type == "text-generation":
        print("adapter: %s%s" % (result.lora_path, val))
        if result.merged_path:
            print("merged model: %s" % result.merged_path)
        if best:
            print(best)
        print("try it: lora-native generate --base %s --lora %s --prompt \"...\""
              % (result.base_model or "BASE_MODEL", result.best_path or result.lora_path))
        return 0
    print("LoRA: %s%s" % (result.lora_path, val))
    if best:
        print(best)
    name = os.path.splitext(os.path.basename(result.lora_path))[0]
    print("use it in a prompt: <lora:%s:0.8>" % name)
    return 0


def _launch_train(n, config, raw_overrides, merge, overrides):
    """`lora-native train --num-processes N`: the same command in N processes via accelerate launch."""
    import subprocess
    from .config import load_config
    from .train.distributed import launch_command
    cfg = load_config(config, overrides)  # config mistakes are reported once, before anything starts
    argv = ["train", "--config", config] + list(raw_overrides) + (["--merge"] if merge else [])
    cmd = launch_command(n, argv, cpu=cfg.device == "cpu" or None)
    print("starting %d training processes: %s" % (n, " ".join(cmd[1:])), file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the processes get it too: they save a checkpoint and stop
            continue


def _add_generate(sub):
    p = sub.add_parser("generate", help="continue a prompt with a language model and a LoRA adapter",
                       description="Load a local Hugging Face causal-LM folder (--base) and optionally a PEFT LoRA "
                                   "adapter folder (--lora, as `lora-native train` writes for task_type "
                                   "text-generation) and print the model's continuation of --prompt. Nothing is "
                                   "downloaded.")
    p.add_argument("--base", required=True, metavar="DIR", help="base model folder (config.json + *.safetensors)")
    p.add_argument("--lora", metavar="DIR", help="adapter folder (adapter_model.safetensors + adapter_config.json)")
    p.add_argument("--prompt", default="", help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; above 0: sampling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn with the tokenizer's chat "
                                                      "template (the adapter folder's tokenizer when it has one)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args):
    from .errors import UsageError
    if args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    _quiet_transformers()
    from .train.text import generate_from_folders
    print(generate_from_folders(args.base, args.lora, args.prompt, args.max_new_tokens, args.temperature, args.seed,
                                args.chat, args.device))
    return 0


def _add_inspect(sub):
    p = sub.add_parser("inspect", help="describe a LoRA file (format, base model, rank/alpha, metadata)")
    p.add_argument("file", help="a .safetensors LoRA (kohya, LoCon, ComfyUI, diffusers/PEFT) or a PEFT adapter folder")
    p.add_argument("--no-metadata", action="store_true", help="leave out the metadata listing")
    p.set_defaults(func=_cmd_inspect)


def _cmd_inspect(args):
    from .errors import UsageError
    from .inspect import inspect_file
    if not os.path.exists(args.file):
        raise UsageError("no such file: %s" % args.file)
    try:
        print(inspect_file(args.file, show_metadata=not args.no_metadata))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return 0


def _add_install(sub):
    for host, folder, what, name in (("webui", "extensions", "the stable-diffusion-webui (or Forge) folder",
                                      "AUTOMATIC1111/Forge"),
                                     ("comfy", "custom_nodes", "the ComfyUI folder", "ComfyUI")):
        p = sub.add_parser("install-" + host, help="add lora-native to %s (link + pip)" % name,
                           description="Link this repository's %s folder into PATH/%s/lora-native (a copy where "
                                       "symlinks are impossible) and pip-install lora-native into the host's own "
                                       "Python (its venv, or --python)." % (
                                           "webui_extension" if host == "webui" else "comfy_nodes", folder))
        p.add_argument("path", help=what)
        p.add_argument("--force", action="store_true", help="replace an existing %s/lora-native that is not ours"
                                                            % folder)
        p.add_argument("--python", help="the host's Python interpreter (default: its venv under PATH)")
        p.add_argument("--no-pip", action="store_true", help="only link the folder")
        p.set_defaults(func=_cmd_install, host=host)


def _cmd_install(args):
    from . import install_hosts
    fn = install_hosts.install_webui if args.host == "webui" else install_hosts.install_comfy
    return fn(args.path, force=args.force, python=args.python, pip=not args.no_pip)


def _add_ui(sub):
    p = sub.add_parser("ui", help="the training page in the browser (gradio)",
                       description="Serve the training page: clean a dataset, edit captions, train a LoRA with live "
                                   "progress. Needs gradio (pip install 'lora-native[ui]').")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--models", action="append", default=[], metavar="DIR",
                   help="folder of base models (.safetensors or diffusers folders); repeatable")
    p.add_argument("--loras", default=None, metavar="DIR", help="where trained LoRAs go (default ./loras)")
    p.add_argument("--demo", action="store_true", help="also offer a tiny demo model and a generated image set, "
                                                       "to click through without real weights (CPU, seconds)")
    p.add_argument("--demo-dir", default="ui_demo", help="folder for --demo's files (default ./ui_demo)")
    p.set_defaults(func=_cmd_ui)


def _cmd_ui(args):
    from .ui.host import Host
    from .ui.app import launch
    models, loras, defaults = list(args.models), args.loras, {}
    if args.demo:
        from .demo import prepare_ui_demo
        demo_models, demo_loras, defaults = prepare_ui_demo(args.demo_dir)
        models.append(demo_models)
        loras = loras or demo_loras
    host = Host(models, loras or "loras")
    print("training page: http://%s:%d  (LoRAs go to %s; Ctrl-C stops)" % (args.host, args.port, host.lora_dir()),
          flush=True)
    launch(host, args.host, args.port, defaults=defaults)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="lora-native", description="LoRA training toolkit with a native data "
                                                                       "pipeline.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    from ._version import __version__
    parser.add_argument("--version", action="version", version="lora-native " + __version__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_clean(sub)
    _add_caption(sub)
    _add_train(sub)
    _add_generate(sub)
    _add_inspect(sub)
    _add_demo(sub)
    _add_info(sub)
    _add_install(sub)
    _add_ui(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        args.overrides = extra
    elif extra:
        parser.error("unrecognized arguments: %s" % " ".join(extra))
    return run_guarded(args.func, args)


def run_guarded(func, args):
    """func(args) -> exit status; our errors and OS errors print one line (tracebacks with --debug),
    Ctrl-C exits 130."""
    try:
        return func(args)
    except (LoraNativeError, OSError) as e:
        if getattr(args, "debug", False):
            raise
        print("error: %s" % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
