"""Run by AUTOMATIC1111 / Forge with the WebUI's Python at startup: installs lora-native into it.

This folder is linked (or copied) from the lora-native repository, so the package is installed
from there. The WebUI's torch and gradio are kept: the [train] extra takes any torch 2.x and
pip only upgrades what does not satisfy a requirement.
"""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def find_repo():
    """The repository root (setup.py + lora_native/), following the link; None for a bare copy."""
    marker = HERE / ".lora-native-copy"  # a copy made by `lora-native install-webui` names its source
    for root in ([Path(marker.read_text().strip()).parent] if marker.is_file() else []) + [HERE.parent]:
        if (root / "setup.py").is_file() and (root / "lora_native").is_dir():
            return root
    return None


def repo_version(repo):
    m = re.search(r"__version__\s*=\s*[\"']([^\"']+)", (repo / "lora_native" / "_version.py").read_text())
    return m.group(1) if m else None


def installed_version():
    if importlib.util.find_spec("lora_native") is None:
        return None
    try:
        from importlib.metadata import version
        return version("lora-native")
    except Exception:
        return "unknown"


def pip_install(spec):
    try:
        import launch  # the WebUI's helper: honours --skip-install and INDEX_URL
    except ImportError:
        launch = None
    if launch is not None and hasattr(launch, "run_pip"):
        launch.run_pip('install "%s"' % spec, "lora-native (%s)" % spec)
    else:
        subprocess.check_call([sys.executable, "-m", "pip", "install", spec])


def main():
    repo = find_repo()
    have = installed_version()
    if repo is None:
        if have is None:
            print("lora-native: not installed in %s and this extension folder is not inside the lora-native "
                  "repository; run: %s -m pip install 'lora-native[train]'" % (sys.executable, sys.executable))
        return
    want = repo_version(repo)
    if have is not None and have == want:
        print("lora-native %s: already installed" % have)
        return
    spec = "%s[train]" % repo
    print("lora-native: %s; installing %s into %s" % (
        "not installed" if have is None else "version %s installed, repository has %s" % (have, want),
        spec, sys.executable))
    try:
        pip_install(spec)
    except Exception as e:  # the WebUI must still start; the tab then explains what is missing
        print("lora-native: install failed: %s" % e, file=sys.stderr)


if __name__ == "__main__":
    main()
