"""`lora-native install-webui` / `install-comfy`: put our extension folder into a host and
install the package into the host's own Python (hosts run their own venv, not ours)."""
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import LoraNativeError, UsageError

COPY_MARKER = ".lora-native-copy"  # in a copied folder: the source path, so reruns refresh it


def repo_root():
    """The repository holding this package (webui_extension/, comfy_nodes/ and setup.py beside it)."""
    root = Path(__file__).resolve().parent.parent
    if not ((root / "setup.py").is_file() and (root / "webui_extension").is_dir() and (root / "comfy_nodes").is_dir()):
        raise UsageError("lora-native is installed as a package (%s), not run from its repository, so the "
                         "extension folders are not here. Clone the repository, `pip install -e .` in it and run "
                         "this command from there." % Path(__file__).resolve().parent)
    return root


def link_folder(src, dst, force=False, out=print):
    """Make dst a symlink to src (a copy with a marker where links are impossible).
    Returns 'created', 'present', 'replaced', 'copied' or 'updated'."""
    src, dst = Path(src).resolve(), Path(dst)
    replaced = False
    if dst.is_symlink():
        if dst.resolve() == src:
            out("already installed: %s -> %s" % (dst, src))
            return "present"
        if not force:
            raise UsageError("%s already exists and links to %s, not %s; remove it or pass --force"
                             % (dst, os.readlink(dst), src))
        dst.unlink()
        replaced = True
    elif dst.exists():
        marker = dst / COPY_MARKER
        ours = marker.is_file() and Path(marker.read_text().strip()) == src
        if not (ours or force):
            raise UsageError("%s already exists and is not lora-native's (%s); move it away or pass --force to "
                             "replace it" % (dst, "a folder" if dst.is_dir() else "a file"))
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        replaced = True
        if ours and not force:
            _copy(src, dst)
            out("updated copy: %s (from %s)" % (dst, src))
            return "updated"
    try:
        os.symlink(src, dst, target_is_directory=True)
    except (OSError, NotImplementedError) as e:  # Windows without developer mode, some mounts
        _copy(src, dst)
        out("copied %s to %s (no symlink: %s); run this command again after updating lora-native" % (src, dst, e))
        return "copied"
    out("%s link: %s -> %s" % ("replaced" if replaced else "created", dst, src))
    return "replaced" if replaced else "created"


def _copy(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    (dst / COPY_MARKER).write_text(str(src) + "\n")


def find_python(root, candidates, given=None):
    """The host's interpreter: --python, else the first candidate under root that exists."""
    if given:
        if not os.path.isfile(given):
            raise UsageError("--python %s: no such file" % given)
        return str(given)
    for rel in candidates:
        p = Path(root) / rel
        if p.is_file():
            return str(p)
    return None


def pip_command(python, repo, extras="train"):
    # [train] only: WebUI brings its own gradio (A1111 pins 3.x) and the ComfyUI nodes need none;
    # pip keeps the host's torch because the extra accepts any torch 2.x.
    return [python, "-m", "pip", "install", "%s[%s]" % (repo, extras)]


def _pip(root, candidates, python, pip, repo, host, out):
    if not pip:
        out("skipped pip (--no-pip)")
        return
    python = find_python(root, candidates, python)
    if python is None:
        out("no %s Python found under %s (looked for %s); install lora-native into the Python that runs it:\n  %s%s"
            % (host, root, ", ".join(candidates), " ".join(shlex.quote(c) for c in pip_command("PYTHON", repo)),
               "\n(the extension's install.py also does this when the WebUI starts)" if host == "WebUI" else ""))
        return
    cmd = pip_command(python, repo)
    out("running: %s" % " ".join(shlex.quote(c) for c in cmd))
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise LoraNativeError("pip failed with exit status %d: %s" % (rc, " ".join(cmd)))


WEBUI_PYTHONS = ("venv/bin/python", "venv/Scripts/python.exe")
COMFY_PYTHONS = ("venv/bin/python", ".venv/bin/python", "venv/Scripts/python.exe", ".venv/Scripts/python.exe",
                 "../python_embeded/python.exe")  # the Windows portable build keeps it beside ComfyUI/


# host -> (folder it loads plugins from, our folder, its Pythons, its name, what to do next)
HOSTS = {
    "webui": ("extensions", "webui_extension", WEBUI_PYTHONS, "WebUI",
              "give the stable-diffusion-webui (or Forge) folder",
              "restart the WebUI: the \"LoRA Train\" tab trains into its LoRA folder (models/Lora); "
              "use the result with <lora:NAME:0.8>"),
    "comfy": ("custom_nodes", "comfy_nodes", COMFY_PYTHONS, "ComfyUI", "give the ComfyUI folder",
              "restart ComfyUI: the nodes are under \"LoRA Native\""),
}


def install_host(host, root, force=False, python=None, pip=True, out=print):
    plugins, ours, pythons, name, which, then = HOSTS[host]
    root = Path(root)
    folder = root / plugins
    if not folder.is_dir():
        raise UsageError("%s has no %s/ folder: %s" % (root, plugins, which))
    repo = repo_root()
    link_folder(repo / ours, folder / "lora-native", force=force, out=out)
    _pip(root, pythons, python, pip, repo, name, out)
    out(then)
    return 0


def install_webui(root, force=False, python=None, pip=True, out=print):
    return install_host("webui", root, force, python, pip, out)


def install_comfy(root, force=False, python=None, pip=True, out=print):
    return install_host("comfy", root, force, python, pip, out)
