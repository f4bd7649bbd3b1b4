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


class ConfigError(LoraNativeError):
    """A training config cannot be used. Carries where: `path` (the config file, None for
    the command line or the API), `line` and `column` (1-based, None when there are none),
    `key`, `problem` (the message without its place) and `origin` (the path, or "command
    line" / "api"). The message reads `origin:line:col: key: problem`; when several problems
    were found, `errors` lists each (this one first) and the message has one line per error."""

    def __init__(self, problem, path=None, line=None, column=None, key=None, origin=None, errors=None, more=0):
        self.problem = problem
        self.path = path
        self.line = line
        self.column = column
        self.key = key
        self.origin = origin if origin is not None else (str(path) if path is not None else None)
        self.errors = list(errors) if errors else [self]
        self.more = more
        lines = [self._one_line()] + [e._one_line() for e in self.errors[1:]]
        if more:
            lines.append("(%d more problem%s not shown)" % (more, "" if more == 1 else "s"))
        super().__init__("\n".join(lines))

    def _one_line(self):
        where = self.origin or "config"
        if self.line is not None:
            where += ":%d:%d" % (self.line, self.column or 0)
        return "%s: %s%s" % (where, self.key + ": " if self.key else "", self.problem)


class ModelError(LoraNativeError):
    """A base model (file or folder) or a tokenizer cannot be used; carries the path."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


class CaptionModelError(UsageError):
    """A captioner's model is missing or incomplete: the message names the files expected and how
    users usually obtain them (lora-native never downloads a model); carries the path."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path
