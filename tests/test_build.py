"""build_info, CUDA reporting, the encoders and the package surface."""
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import lora_native
from lora_native import _native


def test_build_info_fields():
    info = lora_native.build_info()
    assert info["version"] == lora_native.__version__
    assert info["compiler"].startswith("gcc")
    assert info["simd"] in ("scalar", "sse4.1", "avx2", "avx512")
    assert isinstance(info["cuda"], bool) and isinstance(info["cuda_archs"], list)
    if info["cuda"]:
        assert info["cuda_archs"] and all(a.isdigit() for a in info["cuda_archs"])
    assert info["threads"] == os.cpu_count()
    assert info["libyaml"].count(".") == 2 and info["libwebp"].count(".") == 2
    assert "libjpeg" in info["libjpeg"]
    expect = os.environ.get("LORA_NATIVE_EXPECT_SANITIZE")
    if expect:  # make test-asan runs this suite against the sanitizer build
        assert info["sanitize"] == expect


def test_simd_cap_is_read_per_call(monkeypatch):
    monkeypatch.setenv("LORA_NATIVE_SIMD", "scalar")
    assert lora_native.build_info()["simd"] == "scalar"


def test_cuda_built_where_nvcc_is_present():
    info = lora_native.build_info()
    if info["cuda"]:
        assert info["cuda_off_reason"] == ""
    else:
        assert info["cuda_off_reason"]
        if shutil.which("nvcc"):  # then only an explicit choice may have turned it off
            assert "nvcc was not on PATH" not in info["cuda_off_reason"]


def test_cuda_devices_report_a_reason_when_empty():
    devices, why = _native.cuda_devices()
    assert isinstance(devices, list)
    if not devices:
        assert why  # e.g. "no CUDA support in this build" or the driver's reason


def test_cuda_selftest():
    devices, why = _native.cuda_devices()
    if not devices:
        pytest.skip("no GPU: %s" % why)
    for d in devices:
        _native.cuda_selftest(d["index"])


def test_cuda_selftest_without_gpu_is_a_clear_error():
    devices, _ = _native.cuda_devices()
    if devices:
        pytest.skip("a GPU is present")
    with pytest.raises(lora_native.LoraNativeError):
        _native.cuda_selftest(0)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_encode_png_round_trips_exactly(channels):
    rng = np.random.default_rng(channels)
    shape = (37, 53) if channels == 1 else (37, 53, channels)
    a = rng.integers(0, 256, size=shape, dtype=np.uint8)
    with Image.open(io.BytesIO(_native.encode_png(a))) as im:
        assert np.array_equal(np.asarray(im), a)


def test_encode_jpeg_is_close_and_rejects_alpha():
    yy, xx = np.mgrid[0:64, 0:96]
    a = np.stack([xx * 2, yy * 3, xx + yy], -1).astype(np.uint8)
    with Image.open(io.BytesIO(_native.encode_jpeg(a, quality=95))) as im:
        assert im.format == "JPEG" and im.size == (96, 64)
        assert np.abs(np.asarray(im).astype(int) - a).mean() < 2.0
    with pytest.raises(ValueError, match="alpha"):
        _native.encode_jpeg(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="quality"):
        _native.encode_jpeg(a, quality=0)


def test_native_errors_belong_to_the_family():
    assert issubclass(lora_native.NativeError, lora_native.LoraNativeError)
    assert issubclass(lora_native.DatasetError, lora_native.LoraNativeError)
