"""A minimal AUTOMATIC1111 `modules` package, written to the real signatures (modules.script_callbacks,
modules.shared, modules.sd_models, modules.paths, and the Lora extension's `networks`), for loading
the extension without a WebUI."""
import argparse
import os
import sys
import types


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False,
                 category_id=None):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.onchange, self.section, self.refresh = onchange, section, refresh


class Options:
    def __init__(self):
        object.__setattr__(self, "data", {})
        object.__setattr__(self, "data_labels", {})

    def add_option(self, key, info):
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def __getattr__(self, item):
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        raise AttributeError(item)

    def __setattr__(self, key, value):
        self.data[key] = value


class CheckpointInfo:
    def __init__(self, filename, root):
        self.filename = filename
        self.name = os.path.relpath(filename, root).replace(os.sep, "/")
        self.model_name = os.path.splitext(self.name)[0]
        self.shorthash = "%08x" % (abs(hash(self.name)) & 0xFFFFFFFF)
        self.title = "%s [%s]" % (self.name, self.shorthash)


def make_modules(webui_root, lora_dir=None):
    """The modules (name -> module) for a WebUI at webui_root; lora_dir=None is --lora-dir left out."""
    models_path = os.path.join(str(webui_root), "models")

    paths = types.ModuleType("modules.paths")
    paths.script_path = str(webui_root)
    paths.models_path = models_path

    callbacks = types.ModuleType("modules.script_callbacks")
    callbacks.callback_map = {"callbacks_ui_tabs": [], "callbacks_ui_settings": []}
    callbacks.on_ui_tabs = lambda callback, *, name=None: callbacks.callback_map["callbacks_ui_tabs"].append(callback)
    callbacks.on_ui_settings = lambda callback, *, name=None: callbacks.callback_map["callbacks_ui_settings"].append(
        callback)

    def ui_tabs_callback():
        res = []
        for c in callbacks.callback_map["callbacks_ui_tabs"]:
            res += c() or []
        return res

    def ui_settings_callback():
        for c in callbacks.callback_map["callbacks_ui_settings"]:
            c()
    callbacks.ui_tabs_callback = ui_tabs_callback
    callbacks.ui_settings_callback = ui_settings_callback

    shared = types.ModuleType("modules.shared")
    shared.OptionInfo = OptionInfo
    shared.opts = Options()
    # --lora-dir is added by the Lora extension's preload.py; without it the attribute is absent
    shared.cmd_opts = argparse.Namespace(**({"lora_dir": lora_dir} if lora_dir is not None else {}))

    sd_models = types.ModuleType("modules.sd_models")
    sd_models.checkpoints_list = {}
    sd_models.list_models_calls = 0
    model_dir = os.path.join(models_path, "Stable-diffusion")

    def list_models():
        sd_models.list_models_calls += 1
        sd_models.checkpoints_list.clear()
        for dirpath, _, files in os.walk(model_dir):
            for f in sorted(files):
                if f.endswith((".safetensors", ".ckpt")):
                    info = CheckpointInfo(os.path.join(dirpath, f), model_dir)
                    sd_models.checkpoints_list[info.title] = info
    sd_models.list_models = list_models

    networks = types.ModuleType("networks")
    networks.refreshes = 0

    def list_available_networks():
        networks.refreshes += 1
    networks.list_available_networks = list_available_networks

    package = types.ModuleType("modules")
    package.__path__ = []
    for mod in (paths, callbacks, shared, sd_models):
        setattr(package, mod.__name__.split(".")[1], mod)
    return {"modules": package, "modules.paths": paths, "modules.script_callbacks": callbacks,
            "modules.shared": shared, "modules.sd_models": sd_models, "networks": networks}


def install(monkeypatch, webui_root, lora_dir=None):
    """Put the stand-in modules into sys.modules for the test (monkeypatch undoes it)."""
    mods = make_modules(webui_root, lora_dir)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(**{k.split(".")[-1]: v for k, v in mods.items()})
