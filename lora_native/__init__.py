"""lora-native: LoRA training toolkit with a native data pipeline."""
from ._version import __version__
from .errors import LoraNativeError, NativeError, DatasetError, UsageError, ConfigError, ModelError
from . import _native
from . import train as _train_package  # noqa: F401 (the subpackage; the name `train` is the function below)
from .dataset import clean, CleanOptions
from .quality import QualityThresholds


def train(config, callbacks=None, **overrides):
    """Train a LoRA: `config` is a YAML path, a dict of config keys or a Config; `callbacks`
    (dict or object) may define on_start, on_step, on_log, on_checkpoint, on_end, should_stop.
    Returns a TrainResult (lora_path, steps, epochs, final_loss, checkpoints, ...)."""
    from .train.loop import train as _train
    return _train(config, callbacks, **overrides)


def load_config(path, overrides=None):
    """Read a training config (YAML) into a validated Config; errors name file:line:col and key."""
    from .config import load_config as _load
    return _load(path, overrides)


def build_info():
    """Version, compiler, SIMD level in use, CUDA build (with arch list), thread count, libraries."""
    info = dict(_native.build_info())
    info["cuda_archs"] = [a for a in info["cuda_archs"].split(";") if a]
    return info


__all__ = ["__version__", "build_info", "clean", "train", "load_config", "CleanOptions", "QualityThresholds",
           "ConfigError", "ModelError", "LoraNativeError", "NativeError", "DatasetError", "UsageError"]
