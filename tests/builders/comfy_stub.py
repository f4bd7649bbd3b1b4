"""A stand-in for the parts of ComfyUI the node pack uses, written to ComfyUI's signatures
(folder_paths, comfy.utils, comfy.model_management, comfy.sd) and installed into sys.modules."""
import os
import sys
import types

from safetensors.torch import load_file

SUPPORTED_PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


def _folder_paths(roots):
    m = types.ModuleType("folder_paths")
    m.supported_pt_extensions = SUPPORTED_PT_EXTENSIONS
    m.folder_names_and_paths = {name: ([path], SUPPORTED_PT_EXTENSIONS) for name, path in roots.items()}

    def get_folder_paths(folder_name):
        return m.folder_names_and_paths[folder_name][0][:]

    def get_filename_list(folder_name):
        out = set()
        for root in get_folder_paths(folder_name):
            for dirpath, _, files in os.walk(root, followlinks=True):
                for f in files:
                    if os.path.splitext(f)[1].lower() in SUPPORTED_PT_EXTENSIONS:
                        out.add(os.path.relpath(os.path.join(dirpath, f), root))
        return sorted(out)

    def get_full_path(folder_name, filename):
        if folder_name not in m.folder_names_and_paths:
            return None
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for root in m.folder_names_and_paths[folder_name][0]:
            path = os.path.join(root, filename)
            if os.path.isfile(path):
                return path
        return None

    def get_full_path_or_raise(folder_name, filename):
        path = get_full_path(folder_name, filename)
        if path is None:
            raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
        return path

    m.get_folder_paths, m.get_filename_list = get_folder_paths, get_filename_list
    m.get_full_path, m.get_full_path_or_raise = get_full_path, get_full_path_or_raise
    return m


class ProgressBar:
    instances = []

    def __init__(self, total, node_id=None):
        self.total, self.current, self.node_id, self.updates = total, 0, node_id, []
        ProgressBar.instances.append(self)

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        self.updates.append(self.current)

    def update(self, value):
        self.update_absolute(self.current + value)


def _utils():
    m = types.ModuleType("comfy.utils")
    m.ProgressBar = ProgressBar
    m.loaded = []

    def load_torch_file(ckpt, safe_load=False, device=None, return_metadata=False):
        m.loaded.append((ckpt, safe_load))
        sd = load_file(ckpt)
        return (sd, {}) if return_metadata else sd

    m.load_torch_file = load_torch_file
    return m


class InterruptProcessingException(Exception):
    pass


def _model_management():
    m = types.ModuleType("comfy.model_management")
    m.InterruptProcessingException = InterruptProcessingException
    m.interrupt_processing = False
    m.calls = []

    def interrupt_current_processing(value=True):
        m.interrupt_processing = value

    def processing_interrupted():
        return m.interrupt_processing

    def throw_exception_if_processing_interrupted():
        if m.interrupt_processing:
            m.interrupt_processing = False
            raise InterruptProcessingException()

    def unload_all_models():
        m.calls.append("unload_all_models")

    def soft_empty_cache(force=False):
        m.calls.append("soft_empty_cache")

    for fn in (interrupt_current_processing, processing_interrupted, throw_exception_if_processing_interrupted,
               unload_all_models, soft_empty_cache):
        setattr(m, fn.__name__, fn)
    return m


class FakeModel:
    def __init__(self, patches=()):
        self.patches = list(patches)

    def clone(self):
        return FakeModel(self.patches)


class FakeClip:
    """tokenize / encode_from_tokens(_scheduled) as comfy.sd.CLIP has them; records the text."""

    def __init__(self, patches=()):
        self.patches = list(patches)
        self.encoded = []

    def clone(self):
        return FakeClip(self.patches)

    def tokenize(self, text, return_word_ids=False, **kwargs):
        return {"l": [[(w, 1.0) for w in text.split()]], "text": text}

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        import torch
        self.encoded.append(tokens["text"])
        cond, pooled = torch.zeros(1, 77, 8), torch.zeros(1, 8)
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens, unprojected=False, add_dict={}, show_pbar=True):
        out = self.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
        cond = out.pop("cond")
        out.update(add_dict)
        return [[cond, out]]


def _sd():
    m = types.ModuleType("comfy.sd")
    m.lora_calls = []

    def load_lora_for_models(model, clip, lora, strength_model, strength_clip):
        m.lora_calls.append({"keys": sorted(lora), "strength_model": strength_model, "strength_clip": strength_clip})
        new_model = model.clone() if model is not None else None
        new_clip = clip.clone() if clip is not None else None
        if new_model is not None:
            new_model.patches.append(strength_model)
        if new_clip is not None:
            new_clip.patches.append(strength_clip)
        return (new_model, new_clip)

    m.load_lora_for_models = load_lora_for_models
    return m


def install(monkeypatch, roots):
    """Put the stand-in into sys.modules; roots: {"checkpoints": dir, "loras": dir}. Returns the
    modules as a namespace (folder_paths, utils, mm, sd)."""
    for path in roots.values():
        os.makedirs(path, exist_ok=True)
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    ns = types.SimpleNamespace(folder_paths=_folder_paths(roots), utils=_utils(), mm=_model_management(), sd=_sd())
    comfy.utils, comfy.model_management, comfy.sd = ns.utils, ns.mm, ns.sd
    ProgressBar.instances = []
    for name, module in (("folder_paths", ns.folder_paths), ("comfy", comfy), ("comfy.utils", ns.utils),
                         ("comfy.model_management", ns.mm), ("comfy.sd", ns.sd)):
        monkeypatch.setitem(sys.modules, name, module)
    return ns
