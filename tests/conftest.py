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


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """No hub, an empty Hugging Face cache and our own cache folder: results never depend on
    the machine, and nothing is ever downloaded."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LORA_NATIVE_CACHE", str(tmp_path_factory.mktemp("lncache")))
    try:
        import huggingface_hub.constants as hf_constants
    except ImportError:
        return
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hfcache")))
