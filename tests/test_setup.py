"""The build's dependency checks: a missing system header names the package to install, and
tools/system_deps.sh installs as root or prints the exact command otherwise."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def setup_module():
    spec = importlib.util.spec_from_file_location("lora_native_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: setup() does not run
    return module


@pytest.mark.parametrize("header,package", [("stb_image.h", "libstb-dev"), ("yaml.h", "libyaml-dev"),
                                            ("webp/decode.h", "libwebp-dev"), ("jpeglib.h", "libjpeg-dev")])
def test_missing_header_names_the_debian_package(setup_module, monkeypatch, capsys, header, package):
    real = setup_module.find_header
    monkeypatch.setattr(setup_module, "find_header", lambda h, dirs: None if h == header else real(h, dirs))
    with pytest.raises(SystemExit):
        setup_module.system_flags()
    err = capsys.readouterr().err
    assert header in err and "apt-get install %s" % package in err


def test_dependencies_found_on_this_machine(setup_module):
    include_dirs, libraries, _ = setup_module.system_flags()
    assert {"yaml", "webp", "webpdemux", "jpeg"} <= set(libraries)
    assert any(os.path.isfile(os.path.join(d, "stb_image.h")) for d in include_dirs)


def test_cuda_config_explains_itself(setup_module, monkeypatch):
    monkeypatch.setenv("LORA_NATIVE_CUDA", "0")
    assert setup_module.cuda_config() == (None, "disabled by LORA_NATIVE_CUDA=0 at build time")
    monkeypatch.delenv("LORA_NATIVE_CUDA")
    monkeypatch.setattr(setup_module.shutil, "which", lambda name: None)
    assert setup_module.cuda_config() == (None, "nvcc was not on PATH at build time")


@pytest.mark.skipif(not shutil.which("dpkg-query") or not shutil.which("runuser") or os.geteuid() != 0,
                    reason="needs a Debian system and root to run the check as another user")
def test_system_deps_prints_the_command_when_not_root():
    env = dict(os.environ, EXTRA_PACKAGES="lora-native-no-such-package", PYTHON=sys.executable)
    r = subprocess.run(["runuser", "-u", "nobody", "--", "bash", os.path.join(ROOT, "tools", "system_deps.sh")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1
    assert "sudo apt-get install -y lora-native-no-such-package" in r.stderr


@pytest.mark.skipif(not shutil.which("dpkg-query"), reason="needs a Debian system")
def test_system_deps_passes_when_everything_is_installed():
    r = subprocess.run(["bash", os.path.join(ROOT, "tools", "system_deps.sh")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHON=sys.executable))
    assert r.returncode == 0, r.stderr
