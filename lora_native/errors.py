"""One exception family for every entry point; the CLI turns each into a one-line message."""


class LoraNativeError(Exception):
    """Base class of every error lora-native raises on purpose."""


class NativeError(LoraNativeError):
    """An error reported by the C core (lora_native._native)."""


class DatasetError(LoraNativeError):
    """A dataset folder or file cannot be used; carries the path."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


class UsageError(LoraNativeError):
    """Bad command-line or API arguments."""


class ModelError(LoraNativeError):
    """A base model (file or folder) or a tokenizer cannot be used; carries the path."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path
