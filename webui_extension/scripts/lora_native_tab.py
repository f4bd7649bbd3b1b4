"""AUTOMATIC1111 / Forge: the "LoRA Train" tab and the "LoRA Native" settings section.

A shim: the page is lora_native.ui.app.build_ui with a WebUIHost (WebUI checkpoints, LoRA folder).
"""
import sys
from pathlib import Path

from modules import script_callbacks, shared

try:
    import lora_native  # noqa: F401  (installed into the WebUI's Python by install.py)
except ImportError:
    # Not installed yet (install.py failed or was skipped): use the repository this folder is
    # linked from, which works when its native module was built in place.
    _repo = Path(__file__).resolve().parent.parent.parent
    if (_repo / "lora_native" / "__init__.py").is_file():
        sys.path.insert(0, str(_repo))

TAB_TITLE = "LoRA Train"
TAB_ID = "lora_native_train"


def _error_tab(error):
    # A tab that says what is wrong beats a missing tab and a traceback in the console.
    import gradio as gr
    with gr.Blocks(analytics_enabled=False) as blocks:
        gr.Markdown("### lora-native could not start\n\n`%s`\n\nInstall it into this WebUI's Python: "
                    "`lora-native install-webui /path/to/stable-diffusion-webui`, or restart the WebUI "
                    "so that the extension's install.py runs again." % error)
    return blocks


def on_ui_tabs():
    try:
        from lora_native.ui.app import build_ui
        from lora_native.ui.webui_host import WebUIHost
        blocks = build_ui(WebUIHost())
    except ImportError as e:
        blocks = _error_tab(e)
    return [(blocks, TAB_TITLE, TAB_ID)]


def on_ui_settings():
    import gradio as gr
    section = ("lora_native", "LoRA Native")
    shared.opts.add_option("lora_native_output_subfolder", shared.OptionInfo(
        "", "Subfolder of the LoRA folder for trained LoRAs (empty: the LoRA folder itself)", section=section))
    shared.opts.add_option("lora_native_default_rank", shared.OptionInfo(
        16, "Default LoRA rank", gr.Slider, {"minimum": 1, "maximum": 128, "step": 1}, section=section))


script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_ui_settings(on_ui_settings)
