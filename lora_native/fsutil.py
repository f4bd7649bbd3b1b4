"""File-system helpers: atomic writes and safe display of any path."""
import os
import tempfile


def atomic_write_bytes(path, data, durable=False):
    """Write through a temporary file in the same folder and rename, so readers never see a
    half-written file and an interrupted run leaves the previous version intact. durable: also
    flush to disk (file and folder), so a power cut cannot leave an empty file either."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        if durable:
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path, text, encoding="utf-8"):
    atomic_write_bytes(path, text.encode(encoding))


def display_path(path):
    """A printable form of any path, including names that are not valid UTF-8."""
    path = os.fspath(path)
    if isinstance(path, bytes):
        return path.decode("utf-8", "backslashreplace")
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_valid_utf8(path):
    try:
        (path if isinstance(path, bytes) else os.fsencode(path)).decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
