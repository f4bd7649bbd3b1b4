"""ComfyUI nodes (V1 API) over lora_native: clean a dataset, caption it, train a LoRA, load one,
and read `<lora:NAME:W>` tags from a prompt.

ComfyUI's modules (folder_paths, comfy.*) are imported inside the functions: they exist only
once ComfyUI runs, and importing this file must not need them.
"""
import logging
import os
import shutil

CATEGORY = "LoRA Native"
log = logging.getLogger("lora_native.comfy")


def _folder_paths():
    import folder_paths
    return folder_paths


def _mm():
    import comfy.model_management
    return comfy.model_management


def _lora_state_dict(lora_name):
    """The LoRA file `lora_name` (from the "loras" list) as a state dict ComfyUI's loader reads:
    kohya and ComfyUI-native names pass as they are, diffusers/PEFT names become kohya names."""
    import comfy.utils
    from lora_native.apply import is_kohya_named, kohya_state_dict

    path = _folder_paths().get_full_path_or_raise("loras", lora_name)
    tensors = comfy.utils.load_torch_file(path, safe_load=True)
    # Names ComfyUI reads itself (kohya, its own, LyCORIS in kohya names) pass untouched.
    if is_kohya_named(tensors) or any(k.startswith(("lora_unet_", "lora_te", "diffusion_model.", "text_encoders."))
                                      for k in tensors):
        return tensors
    converted, unmatched = kohya_state_dict(tensors)
    if unmatched:
        log.warning("%s: %d modules match no SD1.5/SDXL layer and are skipped (e.g. %s)",
                    lora_name, len(unmatched), unmatched[0])
    if not converted:
        raise ValueError("%s: none of its LoRA modules names an SD1.5 or SDXL layer" % lora_name)
    return converted


def _apply(model, clip, lora_name, strength_model, strength_clip):
    import comfy.sd
    if strength_model == 0 and strength_clip == 0:
        return model, clip
    return comfy.sd.load_lora_for_models(model, clip, _lora_state_dict(lora_name), strength_model, strength_clip)


class CleanDataset:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "source_folder": ("STRING", {"default": "", "tooltip": "Folder of raw images (never modified)."}),
                "resolution": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64}),
                "bucket": ("BOOLEAN", {"default": False, "tooltip": "Aspect-ratio buckets instead of square crops."}),
                "near_dup": ("INT", {"default": 6, "min": -1, "max": 64,
                                     "tooltip": "pHash distance for near duplicates; -1 turns it off."}),
                "keep": (["largest", "sharpest"],),
                "trigger": ("STRING", {"default": "", "tooltip": "Word prepended to every caption."}),
                "min_side": ("INT", {"default": 512, "min": 1, "max": 8192,
                                     "tooltip": "Pictures whose short side is smaller are rejected."}),
            },
            "optional": {
                "output_folder": ("STRING", {"default": "", "tooltip": "Empty: <source>_clean next to the source."}),
            },
        }

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("dataset_folder", "report")
    FUNCTION = "clean"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    def clean(self, source_folder, resolution, bucket, near_dup, keep, trigger, min_side, output_folder=""):
        import lora_native
        src = os.path.abspath(os.path.expanduser(source_folder.strip()))
        out = output_folder.strip() or src.rstrip(os.sep) + "_clean"
        out = os.path.abspath(os.path.expanduser(out))
        report = lora_native.clean(src, out, resolution=resolution, bucket=bucket, near_dup=near_dup, keep=keep,
                                   trigger=trigger, min_side=min_side)
        return (out, report.summary())


def caption_search_dirs():
    """Where the Caption node looks for captioning models: ComfyUI's models folder and the folders
    that hold its checkpoints (extra_model_paths.yaml included), each as `<dir>/captioners/<name>/`
    (e.g. ComfyUI/models/captioners/wd14/wd-v1-4-moat-tagger-v2/)."""
    fp = _folder_paths()
    dirs = []
    models_dir = getattr(fp, "models_dir", None)
    if models_dir:
        dirs.append(models_dir)
    try:
        dirs += [os.path.dirname(os.path.normpath(p)) for p in fp.get_folder_paths("checkpoints")]
    except (KeyError, AttributeError):
        pass
    seen, out = set(), []
    for d in dirs:
        if d and d not in seen:
            seen.add(d)
            out.append(d)
    return out


class CaptionDataset:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dataset_folder": ("STRING", {"default": "", "tooltip": "Folder of images to caption (and its "
                                                                        "subfolders)."}),
                "captioner": (["wd14", "blip", "clip"], {"tooltip": "wd14: danbooru tags; blip: a sentence; clip: "
                                                                    "the best phrases of lists."}),
                "format": (["csv", "txt"], {"tooltip": "csv: metadata.csv in the folder; txt: a .txt beside each "
                                                       "image."}),
                "trigger": ("STRING", {"default": "", "tooltip": "Word put first in every caption."}),
                "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace existing captions (default: keep "
                                                                       "them)."}),
            },
            "optional": {
                "model_path": ("STRING", {"default": "", "tooltip": "Empty: the first model in ComfyUI/models/"
                                                                    "captioners/<captioner>/. Nothing is downloaded."}),
                "prefix": ("STRING", {"default": "", "tooltip": "Text put before each generated caption."}),
                "general_threshold": ("FLOAT", {"default": 0.35, "min": 0.0, "max": 1.0, "step": 0.01,
                                                "tooltip": "WD14: general tags at this probability or more."}),
                "character_threshold": ("FLOAT", {"default": 0.85, "min": 0.0, "max": 1.0, "step": 0.01,
                                                  "tooltip": "WD14: character tags likewise."}),
                "exclude_tags": ("STRING", {"default": "", "tooltip": "WD14: comma-separated tags never written."}),
                "batch_size": ("INT", {"default": 8, "min": 1, "max": 256}),
            },
        }

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("dataset_folder", "report")
    FUNCTION = "caption"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    def caption(self, dataset_folder, captioner, format, trigger, overwrite, model_path="", prefix="",
                general_threshold=0.35, character_threshold=0.85, exclude_tags="", batch_size=8):
        import comfy.utils
        from lora_native.caption import caption

        mm = _mm()
        folder = os.path.abspath(os.path.expanduser(dataset_folder.strip()))
        options = {}
        if captioner == "wd14":
            options = dict(general_threshold=general_threshold, character_threshold=character_threshold,
                           exclude_tags=exclude_tags)
        bar = [None]

        def progress(stage, done, total):
            mm.throw_exception_if_processing_interrupted()
            if bar[0] is None:
                bar[0] = comfy.utils.ProgressBar(max(total, 1))
            bar[0].update_absolute(done, total)

        report = caption(folder, captioner=captioner, model=model_path.strip() or None, format=format,
                         trigger=trigger, prefix=prefix, overwrite=overwrite, batch_size=batch_size,
                         progress=progress, search_dirs=caption_search_dirs(), **options)
        return (folder, report.summary())


class TrainLora:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (_folder_paths().get_filename_list("checkpoints"),),
                "dataset_folder": ("STRING", {"default": "", "tooltip": "A cleaned folder (metadata.csv) or kohya "
                                                                        "10_name/ folders."}),
                "output_name": ("STRING", {"default": "my_lora"}),
                "rank": ("INT", {"default": 16, "min": 1, "max": 256}),
                "max_train_steps": ("INT", {"default": 1000, "min": 0, "max": 1000000,
                                            "tooltip": "0: the epochs decide."}),
                "epochs": ("INT", {"default": 10, "min": 1, "max": 10000}),
                "learning_rate": ("FLOAT", {"default": 1e-4, "min": 1e-7, "max": 1.0, "step": 1e-5, "round": False}),
                "resolution": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
                "save_steps": ("INT", {"default": 0, "min": 0, "max": 1000000,
                                       "tooltip": "Checkpoint every N steps (0: only at the end)."}),
                "seed": ("INT", {"default": 42, "min": 0, "max": 0xFFFFFFFF}),
            },
            "optional": {
                "config_yaml": ("STRING", {"default": "", "tooltip": "A lora-native YAML config: its keys win, "
                                                                     "the fields above fill the rest."}),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("lora_name",)
    FUNCTION = "train"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    def train(self, ckpt_name, dataset_folder, output_name, rank, max_train_steps, epochs, learning_rate, resolution,
              batch_size, save_steps, seed, config_yaml=""):
        import comfy.utils
        from lora_native.config import config_file_keys, load_config
        from lora_native.train.loop import TrainingInterrupted, train

        fp, mm = _folder_paths(), _mm()
        output_name = output_name.strip()
        if not output_name or "/" in output_name or "\\" in output_name:
            raise ValueError("output_name must be a plain file name without folders, got %r" % output_name)
        lora_root = fp.get_folder_paths("loras")[0]
        fields = {
            "base_model": fp.get_full_path_or_raise("checkpoints", ckpt_name),
            "train_data_dir": os.path.abspath(os.path.expanduser(dataset_folder.strip())),
            "output_dir": os.path.join(lora_root, "lora_native_training", output_name),
            "output_name": output_name, "lora_rank": rank, "max_train_steps": max_train_steps, "epochs": epochs,
            "learning_rate": learning_rate, "resolution": resolution, "batch_size": batch_size,
            "save_steps": save_steps, "seed": seed,
        }
        if config_yaml.strip():
            path = os.path.abspath(os.path.expanduser(config_yaml.strip()))
            in_file = config_file_keys(path)
            cfg = load_config(path, {k: v for k, v in fields.items() if k not in in_file})
        else:
            from lora_native.config import Config
            cfg = Config.from_dict(fields)

        # Training needs the memory ComfyUI's loaded models hold.
        mm.unload_all_models()
        mm.soft_empty_cache()

        state = {"bar": None}

        def on_start(info):
            state["bar"] = comfy.utils.ProgressBar(max(1, info["total_steps"]))
            state["bar"].update_absolute(info["resume_step"])

        def on_step(logs):
            if state["bar"] is not None:
                state["bar"].update_absolute(logs["step"])

        callbacks = {"on_start": on_start, "on_step": on_step, "should_stop": mm.processing_interrupted}
        try:
            result = train(cfg, callbacks=callbacks)
        except TrainingInterrupted as e:
            log.info("%s", e)
            mm.throw_exception_if_processing_interrupted()
            raise
        final = os.path.join(lora_root, output_name + ".safetensors")
        if os.path.abspath(result.lora_path) != os.path.abspath(final):
            # Moved, not copied: one file per name in the LoRA list keeps <lora:NAME> unambiguous.
            shutil.move(result.lora_path, final)
        return (os.path.relpath(final, lora_root).replace(os.sep, "/"),)


class LoadLoraNative:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "clip": ("CLIP",),
                "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}),
                "strength_clip": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}),
            },
            # A file from the list, or Train LoRA's output: ComfyUI links a STRING output only to a
            # STRING input, never to the list, and checks a listed name before the graph runs.
            "optional": {
                "lora_name": (_folder_paths().get_filename_list("loras"),),
                "trained_lora": ("STRING", {"forceInput": True}),
            },
        }

    RETURN_TYPES = ("MODEL", "CLIP")
    RETURN_NAMES = ("MODEL", "CLIP")
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, model, clip, strength_model, strength_clip, lora_name=None, trained_lora=None):
        name = trained_lora or lora_name
        if not name:
            raise ValueError("Load LoRA (native): choose a LoRA file or connect Train LoRA's lora_name output")
        return _apply(model, clip, name, strength_model, strength_clip)


class PromptWithLoraTags:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "clip": ("CLIP",),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                    "tooltip": "Prompt with <lora:NAME:W> or <lora:NAME:W_te:W_unet> tags."}),
            }
        }

    RETURN_TYPES = ("MODEL", "CLIP", "CONDITIONING")
    RETURN_NAMES = ("MODEL", "CLIP", "CONDITIONING")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, model, clip, text):
        from lora_native.prompt import parse, resolve
        parsed = parse(text)
        found, warnings = resolve(parsed.loras, _folder_paths().get_filename_list("loras"))
        for message in parsed.warnings + warnings:
            log.warning("%s", message)
        for _, entry, unet, te in found:
            model, clip = _apply(model, clip, entry, unet, te)
        tokens = clip.tokenize(parsed.text)
        if hasattr(clip, "encode_from_tokens_scheduled"):
            cond = clip.encode_from_tokens_scheduled(tokens)
        else:  # ComfyUI before hook scheduling
            c, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
            cond = [[c, {"pooled_output": pooled}]]
        return (model, clip, cond)


NODE_CLASS_MAPPINGS = {
    "LoraNativeCleanDataset": CleanDataset,
    "LoraNativeCaptionDataset": CaptionDataset,
    "LoraNativeTrainLora": TrainLora,
    "LoraNativeLoadLora": LoadLoraNative,
    "LoraNativePromptWithTags": PromptWithLoraTags,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoraNativeCleanDataset": "Clean Dataset (LoRA Native)",
    "LoraNativeCaptionDataset": "Caption Dataset (LoRA Native)",
    "LoraNativeTrainLora": "Train LoRA (LoRA Native)",
    "LoraNativeLoadLora": "Load LoRA (native)",
    "LoraNativePromptWithTags": "Prompt with LoRA tags",
}
