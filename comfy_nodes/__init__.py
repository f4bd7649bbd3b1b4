"""lora-native for ComfyUI: symlink this folder into ComfyUI/custom_nodes/ and install the
`lora_native` package into ComfyUI's Python (pip install -e /path/to/lora-native)."""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
