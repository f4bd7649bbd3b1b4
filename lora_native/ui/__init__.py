"""The training page (gradio) shared by the standalone app and the WebUI tab: `build_ui(host)`."""
