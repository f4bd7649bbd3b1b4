"""What the training UI needs from the program it runs in (WebUI, the standalone app, ...).

The gradio Blocks of lora_native.ui.app is built from one of these, so the same page serves
every home; a host only says where models and LoRAs live and what to do after a run.
"""
import os
import re


class Host:
    """The standalone app's host: base models and LoRAs in plain folders."""

    name = "standalone"

    def __init__(self, models_dirs=(), lora_dir="loras"):
        self.models_dirs = [os.path.abspath(d) for d in models_dirs]
        self._lora_dir = os.path.abspath(lora_dir)

    def list_base_models(self):
        """Names to show in the base-model dropdown (resolved with resolve_base_model)."""
        names = []
        for root in self.models_dirs:
            if not os.path.isdir(root):
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                if os.path.isfile(os.path.join(dirpath, "model_index.json")):  # a diffusers folder
                    names.append(os.path.relpath(dirpath, root))
                    dirnames[:] = []
                    continue
                for f in sorted(filenames):
                    if f.endswith(".safetensors"):
                        names.append(os.path.relpath(os.path.join(dirpath, f), root))
        return sorted(set(names), key=str.lower)

    def resolve_base_model(self, name):
        """The path of a listed name (an absolute path is taken as it is)."""
        if os.path.isabs(name):
            return name
        for root in self.models_dirs:
            path = os.path.join(root, name)
            if os.path.exists(path):
                return path
        raise FileNotFoundError("no base model named %r in %s" % (name, ", ".join(self.models_dirs) or "(no folder)"))

    def caption_search_dirs(self):
        """Folders holding `captioners/<blip|wd14|clip>/<model>/` for the Caption button
        (lora_native.caption.models)."""
        return list(self.models_dirs)

    def lora_dir(self):
        """Where trained LoRA files go (the host's LoRA folder)."""
        return self._lora_dir

    def defaults(self):
        """Initial values of the page's fields that the host sets (e.g. WebUI settings)."""
        return {}

    def after_training(self, lora_path):
        """Called with the new LoRA file once a run ends (WebUI refreshes its LoRA list here)."""
        return self.refresh_loras()

    def refresh_loras(self):
        """Make the host see new LoRA files; True when it did something (the standalone app
        lists nothing, so there is nothing to refresh)."""
        return False

    def tag_for(self, lora_path, weight=0.8):
        """The prompt tag that loads this file in the host: <lora:NAME:W>, NAME relative to the
        LoRA folder without the extension (subfolders kept, as A1111 and our prompt tags accept)."""
        rel = os.path.relpath(os.path.abspath(lora_path), self.lora_dir())
        if rel.startswith(".."):
            rel = os.path.basename(lora_path)
        name = re.sub(r"\.safetensors$", "", rel.replace(os.sep, "/"))
        return "<lora:%s:%s>" % (name, ("%g" % weight))
