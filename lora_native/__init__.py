"""lora-native: LoRA training toolkit with a native data pipeline."""
from ._version import __version__
from .errors import LoraNativeError, NativeError, DatasetError, UsageError
from . import _native
from .dataset import clean, CleanOptions
from .quality import QualityThresholds


def build_info():
    """Version, compiler, SIMD level in use, CUDA build (with arch list), thread count, libraries."""
    info = dict(_native.build_info())
    info["cuda_archs"] = [a for a in info["cuda_archs"].split(";") if a]
    return info


__all__ = ["__version__", "build_info", "clean", "CleanOptions", "QualityThresholds", "LoraNativeError", "NativeError", "DatasetError", "UsageError"]
