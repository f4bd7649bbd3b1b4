"""The Host for AUTOMATIC1111 / Forge: checkpoints, LoRA folder and settings come from the WebUI.

Importable without the WebUI: `modules.*` is imported inside the methods, so tests (and the
standalone app) can load this file and the WebUI's own import order is left alone.
"""
import os
import sys

from .host import Host

SECTION = ("lora_native", "LoRA Native")
# Settings this extension adds (key: default); the tab script registers them with labels.
OPTION_DEFAULTS = {
    "lora_native_output_subfolder": "",
    "lora_native_default_rank": 16,
}


def _opt(key):
    from modules import shared
    return getattr(shared.opts, key, OPTION_DEFAULTS[key])


class WebUIHost(Host):
    name = "webui"

    def __init__(self):
        super().__init__(models_dirs=())

    def _checkpoints(self, refresh):
        from modules import sd_models
        if refresh:
            try:
                sd_models.list_models()  # rescans models/Stable-diffusion (and --ckpt-dir)
            except Exception as e:  # a broken file must not take the tab down
                print("lora-native: refreshing the checkpoint list failed: %s" % e, file=sys.stderr)
        return list(sd_models.checkpoints_list.values())

    def list_base_models(self):
        """The WebUI's checkpoint titles ("sd15/model.safetensors [hash]"), as its dropdown shows them."""
        return sorted((c.title for c in self._checkpoints(refresh=True)), key=str.lower)

    def resolve_base_model(self, name):
        if os.path.isabs(name) and os.path.exists(name):
            return name
        checkpoints = self._checkpoints(refresh=False)
        for attr in ("title", "name", "model_name"):  # the title first: it is what we listed
            for c in checkpoints:
                if getattr(c, attr, None) == name:
                    return c.filename
        raise FileNotFoundError("no checkpoint named %r in the WebUI's list (refresh it, or give a full path)" % name)

    def caption_search_dirs(self):
        """The WebUI's models folder: models/captioners/<blip|wd14|clip>/<model>/."""
        from modules import paths
        return [paths.models_path]

    def lora_root(self):
        """The WebUI's LoRA folder: --lora-dir, else models/Lora (the Lora extension's default)."""
        from modules import paths, shared
        lora_dir = getattr(shared.cmd_opts, "lora_dir", None)
        return os.path.abspath(lora_dir or os.path.join(paths.models_path, "Lora"))

    def lora_dir(self):
        sub = (_opt("lora_native_output_subfolder") or "").strip().strip("/\\")
        return os.path.join(self.lora_root(), sub) if sub else self.lora_root()

    def defaults(self):
        """Form defaults from the WebUI settings (Settings > LoRA Native)."""
        return {"lora_rank": int(_opt("lora_native_default_rank"))}

    def after_training(self, lora_path):
        return self.refresh_loras()

    def refresh_loras(self):
        """Rescan the built-in Lora extension's list so <lora:name:w> works without a restart.
        Returns True when the list was refreshed."""
        networks = sys.modules.get("networks")  # the Lora extension imports it as a top-level module
        if networks is None:
            try:
                import networks  # noqa: F811
            except ImportError:
                return False
        refresh = getattr(networks, "list_available_networks", None)
        if refresh is None:
            return False
        try:
            refresh()
        except Exception as e:
            print("lora-native: refreshing the Lora list failed: %s" % e, file=sys.stderr)
            return False
        return True

    def tag_for(self, lora_path, weight=0.8):
        """<lora:STEM:W>: the Lora extension names a file by its stem, subfolders left out (it also
        accepts the ss_output_name alias, which our exports set to the same name)."""
        name = os.path.splitext(os.path.basename(lora_path))[0]
        return "<lora:%s:%s>" % (name, "%g" % weight)
