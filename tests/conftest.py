import os
import sys

# Tests import `builders` (tests/builders/) as a package.
sys.path.insert(0, os.path.dirname(__file__))

# Parity tests compare with the installed Pillow. Pillow 13 changed the order of the two
# resampling passes for tall shrinks; older Pillow is matched with LORA_NATIVE_PILLOW_COMPAT.
try:
    import PIL

    _major = int(PIL.__version__.split(".")[0])
    if _major < 13:
        os.environ.setdefault("LORA_NATIVE_PILLOW_COMPAT", str(_major))
except ImportError:
    pass
