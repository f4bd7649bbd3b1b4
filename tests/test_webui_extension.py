"""The AUTOMATIC1111 / Forge extension against a stand-in `modules` package, and the
install-webui / install-comfy commands in temporary folders."""
import importlib.util
import os
import stat
import sys
from pathlib import Path

import pytest

from builders import webui_stub
from lora_native import cli, install_hosts

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _package_in_this_repo(monkeypatch):
    # The sanitizer run imports a copy of lora_native from build/asan; the install commands
    # look for the extension folders beside the package, so point them at this checkout.
    if Path(install_hosts.__file__).resolve().parent.parent != REPO:
        monkeypatch.setattr(install_hosts, "__file__", str(REPO / "lora_native" / "install_hosts.py"))
TAB_SCRIPT = REPO / "webui_extension" / "scripts" / "lora_native_tab.py"


@pytest.fixture
def webui(tmp_path, monkeypatch):
    root = tmp_path / "stable-diffusion-webui"
    sd = root / "models" / "Stable-diffusion"
    (sd / "sdxl").mkdir(parents=True)
    (sd / "v1-5-pruned-emaonly.safetensors").write_bytes(b"x")
    (sd / "sdxl" / "juggernaut.safetensors").write_bytes(b"x")
    (root / "extensions").mkdir()
    stub = webui_stub.install(monkeypatch, root)
    stub.root = root
    return stub


def load_tab_script():
    spec = importlib.util.spec_from_file_location("lora_native_tab_under_test", TAB_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tab_script_registers_tab_and_settings(webui):
    gr = pytest.importorskip("gradio")
    load_tab_script()
    cbs = webui.script_callbacks.callback_map
    assert len(cbs["callbacks_ui_tabs"]) == 1 and len(cbs["callbacks_ui_settings"]) == 1
    webui.script_callbacks.ui_settings_callback()
    labels = webui.shared.opts.data_labels
    assert labels["lora_native_default_rank"].default == 16
    assert labels["lora_native_output_subfolder"].default == ""
    assert all(info.section == ("lora_native", "LoRA Native") for info in labels.values())
    try:
        import lora_native.ui.app  # noqa: F401
    except ImportError:
        pytest.skip("lora_native.ui.app not present")
    tabs = webui.script_callbacks.ui_tabs_callback()
    assert len(tabs) == 1
    blocks, title, elem_id = tabs[0]
    assert isinstance(blocks, gr.Blocks) and (title, elem_id) == ("LoRA Train", "lora_native_train")
    by_id = {getattr(b, "elem_id", None): b for b in blocks.blocks.values()}
    # the real page: the WebUI's checkpoints, the rank from its settings, a LoRA-list refresh, the tag box
    assert {"ln-base-model", "ln-train", "ln-tag", "ln-refresh-loras"} <= set(by_id)
    assert by_id["ln-rank"].value == 16
    assert by_id["ln-base-model"].value.startswith("sdxl/juggernaut.safetensors")


def test_tab_explains_a_missing_package(webui, monkeypatch):
    gr = pytest.importorskip("gradio")
    load_tab_script()
    monkeypatch.setitem(sys.modules, "lora_native.ui.app", None)  # import now raises ImportError
    [(blocks, title, elem_id)] = webui.script_callbacks.ui_tabs_callback()
    assert isinstance(blocks, gr.Blocks) and elem_id == "lora_native_train"


def test_tab_builds_the_page_for_a_webui_host(webui, monkeypatch):
    # Whatever build_ui is, the tab hands it a WebUIHost and returns its Blocks under our title.
    import types
    gr = pytest.importorskip("gradio")
    from lora_native.ui.webui_host import WebUIHost
    seen = []

    def build_ui(host):
        seen.append(host)
        with gr.Blocks() as blocks:
            gr.Markdown(", ".join(host.list_base_models()))
        return blocks
    monkeypatch.setitem(sys.modules, "lora_native.ui.app", types.SimpleNamespace(build_ui=build_ui))
    load_tab_script()
    [(blocks, title, elem_id)] = webui.script_callbacks.ui_tabs_callback()
    assert isinstance(seen[0], WebUIHost) and isinstance(blocks, gr.Blocks) and title == "LoRA Train"


def test_host_lists_the_webui_checkpoints(webui):
    from lora_native.ui.webui_host import WebUIHost
    host = WebUIHost()
    names = host.list_base_models()
    assert webui.sd_models.list_models_calls == 1  # refreshed, as the WebUI's own refresh button does
    assert [n.split(" [")[0] for n in names] == ["sdxl/juggernaut.safetensors", "v1-5-pruned-emaonly.safetensors"]
    sd = webui.root / "models" / "Stable-diffusion"
    assert host.resolve_base_model(names[0]) == str(sd / "sdxl" / "juggernaut.safetensors")
    assert host.resolve_base_model("v1-5-pruned-emaonly") == str(sd / "v1-5-pruned-emaonly.safetensors")
    with pytest.raises(FileNotFoundError, match="no checkpoint named"):
        host.resolve_base_model("nope")


def test_host_lora_dir(webui, tmp_path):
    from lora_native.ui.webui_host import WebUIHost
    host = WebUIHost()
    assert host.lora_dir() == str(webui.root / "models" / "Lora")  # the Lora extension's default
    webui.shared.cmd_opts.lora_dir = str(tmp_path / "my_loras")  # --lora-dir
    assert host.lora_dir() == str(tmp_path / "my_loras")
    webui.shared.opts.lora_native_output_subfolder = "trained/"
    assert host.lora_dir() == str(tmp_path / "my_loras" / "trained")
    webui.shared.opts.lora_native_default_rank = 32
    assert host.defaults() == {"lora_rank": 32}


def test_host_tag_and_refresh(webui, monkeypatch):
    from lora_native.ui.webui_host import WebUIHost
    host = WebUIHost()
    path = os.path.join(host.lora_dir(), "styles", "paper_cut.safetensors")
    assert host.tag_for(path) == "<lora:paper_cut:0.8>"  # the Lora extension names files by stem
    assert host.tag_for(path, 1) == "<lora:paper_cut:1>"
    assert host.after_training(path) is True and webui.networks.refreshes == 1
    monkeypatch.delitem(sys.modules, "networks")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not os.path.isfile(os.path.join(p, "networks.py"))])
    assert host.after_training(path) is False  # no Lora extension (disabled): nothing to refresh


# --- install-webui / install-comfy -------------------------------------------------------------

def run_cli(args, capsys):
    rc = cli.main(args)
    out = capsys.readouterr()
    return rc, out.out + out.err


@pytest.mark.parametrize("host, folder, source", [("webui", "extensions", "webui_extension"),
                                                  ("comfy", "custom_nodes", "comfy_nodes")])
def test_install_links_idempotently(tmp_path, capsys, host, folder, source):
    (tmp_path / folder).mkdir()
    link = tmp_path / folder / "lora-native"
    rc, out = run_cli(["install-" + host, str(tmp_path), "--no-pip"], capsys)
    assert rc == 0 and "created link" in out and "skipped pip" in out
    assert link.is_symlink() and link.resolve() == (REPO / source).resolve()
    rc, out = run_cli(["install-" + host, str(tmp_path), "--no-pip"], capsys)
    assert rc == 0 and "already installed" in out


@pytest.mark.parametrize("host, folder", [("webui", "extensions"), ("comfy", "custom_nodes")])
def test_install_refuses_a_foreign_folder(tmp_path, capsys, host, folder):
    theirs = tmp_path / folder / "lora-native"
    theirs.mkdir(parents=True)
    (theirs / "keep.txt").write_text("someone else's")
    rc, out = run_cli(["install-" + host, str(tmp_path), "--no-pip"], capsys)
    assert rc == 2 and "not lora-native's" in out and "--force" in out
    assert (theirs / "keep.txt").is_file()
    rc, out = run_cli(["install-" + host, str(tmp_path), "--no-pip", "--force"], capsys)
    assert rc == 0 and "replaced link" in out and theirs.is_symlink()


def test_install_refuses_a_link_elsewhere_and_a_wrong_root(tmp_path, capsys):
    (tmp_path / "extensions").mkdir()
    os.symlink(tmp_path, tmp_path / "extensions" / "lora-native")
    rc, out = run_cli(["install-webui", str(tmp_path), "--no-pip"], capsys)
    assert rc == 2 and "links to" in out
    rc, out = run_cli(["install-comfy", str(tmp_path), "--no-pip"], capsys)
    assert rc == 2 and "no custom_nodes/ folder" in out


def test_install_copies_where_symlinks_fail(tmp_path, capsys, monkeypatch):
    (tmp_path / "extensions").mkdir()

    def no_symlink(*a, **k):
        raise OSError("symbolic links are not permitted")
    monkeypatch.setattr(os, "symlink", no_symlink)
    copy = tmp_path / "extensions" / "lora-native"
    rc, out = run_cli(["install-webui", str(tmp_path), "--no-pip"], capsys)
    assert rc == 0 and "copied" in out and not copy.is_symlink()
    assert (copy / "scripts" / "lora_native_tab.py").is_file() and (copy / install_hosts.COPY_MARKER).is_file()
    rc, out = run_cli(["install-webui", str(tmp_path), "--no-pip"], capsys)  # ours: refreshed, not refused
    assert rc == 0 and "updated copy" in out


def fake_python(path, rc=0):
    """An interpreter stand-in that records its arguments, one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > \"$(dirname \"$0\")/argv.txt\"\nexit %d\n" % rc)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.mark.skipif(sys.platform == "win32", reason="the fake interpreter is a shell script")
@pytest.mark.parametrize("host, folder, venv", [("webui", "extensions", "venv"), ("comfy", "custom_nodes", "venv"),
                                                ("comfy", "custom_nodes", ".venv")])
def test_install_pips_into_the_host_venv(tmp_path, capsys, host, folder, venv):
    (tmp_path / folder).mkdir()
    python = fake_python(tmp_path / venv / "bin" / "python")
    rc, out = run_cli(["install-" + host, str(tmp_path)], capsys)
    assert rc == 0 and "running: " in out
    argv = (python.parent / "argv.txt").read_text().splitlines()
    assert argv == ["-m", "pip", "install", "%s[train]" % REPO.resolve()]


@pytest.mark.skipif(sys.platform == "win32", reason="the fake interpreter is a shell script")
def test_install_pip_with_python_option_and_failure(tmp_path, capsys):
    (tmp_path / "custom_nodes").mkdir()
    python = fake_python(tmp_path / "elsewhere" / "python3", rc=1)
    rc, out = run_cli(["install-comfy", str(tmp_path), "--python", str(python)], capsys)
    assert rc == 2 and "pip failed with exit status 1" in out
    assert (python.parent / "argv.txt").read_text().splitlines()[:3] == ["-m", "pip", "install"]
    rc, out = run_cli(["install-comfy", str(tmp_path), "--python", str(tmp_path / "missing")], capsys)
    assert rc == 2 and "no such file" in out


def test_install_without_host_python_prints_the_command(tmp_path, capsys):
    (tmp_path / "custom_nodes").mkdir()
    rc, out = run_cli(["install-comfy", str(tmp_path)], capsys)
    assert rc == 0 and "PYTHON -m pip install" in out and "[train]" in out


def test_install_from_a_non_editable_package(tmp_path, monkeypatch):
    fake_pkg = tmp_path / "site-packages" / "lora_native"
    fake_pkg.mkdir(parents=True)
    monkeypatch.setattr(install_hosts, "__file__", str(fake_pkg / "install_hosts.py"))
    with pytest.raises(install_hosts.UsageError, match="not run from its repository"):
        install_hosts.repo_root()


def test_extension_install_py_finds_the_repo():
    spec = importlib.util.spec_from_file_location("lora_native_install_under_test",
                                                  REPO / "webui_extension" / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # importing runs nothing: A1111 runs it as a script
    assert module.find_repo() == REPO.resolve()
    from lora_native._version import __version__
    assert module.repo_version(module.find_repo()) == __version__
