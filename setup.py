"""Builds lora_native._native from csrc/ (C11 core + CPython/NumPy glue, CUDA when nvcc is present).

Environment:
  CI=true                      add -Werror (warnings are errors in CI)
  LORA_NATIVE_CUDA=0           build CPU-only even when nvcc is on PATH
  LORA_NATIVE_CUDA_ARCHS=80;90 SM architectures for the CUDA fatbin (default 80;86;89;90)
  LORA_NATIVE_SANITIZE=address,undefined   sanitizer build (no CUDA, -O1 -g)
  LORA_NATIVE_STB_INCLUDE=DIR  where stb_image.h lives (default: /usr/include/stb)
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.dist import Distribution
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"

SYSTEM_DEPS = {
    # header: (pkg-config name or None, Debian package)
    "stb_image.h": (None, "libstb-dev"),
    "yaml.h": ("yaml-0.1", "libyaml-dev"),
    "webp/decode.h": ("libwebp", "libwebp-dev"),
    "webp/demux.h": ("libwebpdemux", "libwebp-dev"),
    "jpeglib.h": ("libjpeg", "libjpeg-dev"),
}


def fail(msg):
    sys.stderr.write("\nlora-native build error: " + msg + "\n\n")
    raise SystemExit(1)


def pkg_config(name, flag):
    try:
        out = subprocess.run(["pkg-config", flag, name], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.split()


def find_header(header, extra_dirs):
    for d in list(extra_dirs) + ["/usr/include", "/usr/local/include", "/usr/include/x86_64-linux-gnu",
                                 "/usr/include/aarch64-linux-gnu"]:
        if (Path(d) / header).is_file():
            return d
    return None


def system_flags():
    include_dirs, libraries, library_dirs = [], [], []
    stb_dirs = [os.environ.get("LORA_NATIVE_STB_INCLUDE", ""), "/usr/include/stb", "/usr/local/include/stb"]
    stb_dir = find_header("stb_image.h", [d for d in stb_dirs if d])
    if stb_dir is None:
        fail("stb_image.h not found. Install it with: apt-get install libstb-dev "
             "(or set LORA_NATIVE_STB_INCLUDE to the folder holding stb_image.h).")
    if find_header("stb_image_write.h", [stb_dir]) is None:
        fail("stb_image_write.h not found next to stb_image.h in %s. Install: apt-get install libstb-dev" % stb_dir)
    include_dirs.append(stb_dir)
    for header, (pc, deb) in SYSTEM_DEPS.items():
        if pc is None:
            continue
        cflags = pkg_config(pc, "--cflags-only-I")
        libs = pkg_config(pc, "--libs")
        inc = [f[2:] for f in (cflags or []) if f.startswith("-I")]
        if find_header(header, inc) is None:
            fail("%s not found (pkg-config %s). Install it with: apt-get install %s" % (header, pc, deb))
        include_dirs += inc
        if libs:
            libraries += [f[2:] for f in libs if f.startswith("-l")]
            library_dirs += [f[2:] for f in libs if f.startswith("-L")]
        else:
            libraries.append({"yaml-0.1": "yaml", "libwebp": "webp", "libwebpdemux": "webpdemux",
                              "libjpeg": "jpeg"}[pc])
    dedup = lambda xs: list(dict.fromkeys(xs))  # noqa: E731
    return dedup(include_dirs), dedup(libraries), dedup(library_dirs)


def numpy_include():
    try:
        import numpy
    except ImportError:
        fail("numpy is needed to build (pip install numpy), or build with pip's default build isolation.")
    return numpy.get_include()


def sanitizers():
    value = os.environ.get("LORA_NATIVE_SANITIZE", "").strip()
    return [s for s in value.split(",") if s]


def cuda_config():
    """-> (config or None, why CUDA is off)."""
    if os.environ.get("LORA_NATIVE_CUDA", "1") in ("0", "no", "false"):
        return None, "disabled by LORA_NATIVE_CUDA=0 at build time"
    if sanitizers():
        return None, "sanitizer build (CPU only)"
    nvcc = shutil.which("nvcc")
    if not nvcc:
        return None, "nvcc was not on PATH at build time"
    if not cu_sources():
        return None, "no CUDA sources"
    archs = os.environ.get("LORA_NATIVE_CUDA_ARCHS", "80;86;89;90").replace(",", ";")
    archs = [a.strip() for a in archs.split(";") if a.strip()]
    home = Path(nvcc).resolve().parent.parent
    for cand in (home, Path("/usr/local/cuda")):
        if (cand / "lib64" / "libcudart_static.a").is_file():
            home = cand
            break
    else:
        # nvcc without a static runtime cannot link our module: build CPU-only and say why.
        sys.stderr.write("lora-native: nvcc found but libcudart_static.a is missing; building CPU-only\n")
        return None, "nvcc found but libcudart_static.a is missing"
    return {"nvcc": nvcc, "archs": archs, "home": home}, ""


def c_sources():
    skip = {"fuzz"}
    return sorted(str(p.relative_to(ROOT)) for p in CSRC.rglob("*.c") if not (skip & set(p.parts)))


def cu_sources():
    return sorted(str(p.relative_to(ROOT)) for p in CSRC.rglob("*.cu"))


class BuildExt(build_ext):
    def build_extension(self, ext):
        cuda = self.distribution.lora_cuda
        if cuda:
            objects = []
            build_temp = Path(self.build_temp) / "cuda"
            build_temp.mkdir(parents=True, exist_ok=True)
            gencode = []
            for a in cuda["archs"]:
                gencode += ["-gencode", "arch=compute_%s,code=sm_%s" % (a, a)]
            for src in cu_sources():
                obj = build_temp / (Path(src).with_suffix("").as_posix().replace("/", "_") + ".o")
                if not obj.exists() or obj.stat().st_mtime < max(Path(src).stat().st_mtime, self._newest_header()):
                    cmd = [cuda["nvcc"], "-c", src, "-o", str(obj), "-O3", "-std=c++17",
                           "-Xcompiler", "-fPIC,-fvisibility=hidden", "-Icsrc/include"] + gencode
                    if os.environ.get("CI"):
                        cmd += ["-Werror", "all-warnings"]
                    self.announce(" ".join(cmd), level=2)
                    subprocess.run(cmd, check=True, cwd=ROOT)
                objects.append(str(obj))
            ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)

    @staticmethod
    def _newest_header():
        return max(p.stat().st_mtime for pattern in ("*.h", "*.cuh") for p in CSRC.rglob(pattern))


def make_extension():
    include_dirs, libraries, library_dirs = system_flags()
    cflags = ["-std=c11", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra",
              "-Wno-missing-field-initializers", "-ffp-contract=off", "-pthread"]
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        cflags.append("-Werror")
    ldflags = ["-pthread"]
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_20_API_VERSION"),
              ("LN_VERSION", '"%s"' % version())]
    san = sanitizers()
    if san:
        flag = "-fsanitize=" + ",".join(san)
        cflags = [c for c in cflags if c != "-O3"] + [flag, "-fno-omit-frame-pointer", "-fno-sanitize-recover=all",
                                                        "-O1", "-g"]
        ldflags += [flag]
        macros.append(("LN_SANITIZE", '"%s"' % ",".join(san)))
    cuda, why_not = cuda_config()
    if cuda:
        macros += [("LN_WITH_CUDA", "1"), ("LN_CUDA_ARCHS", '"%s"' % ";".join(cuda["archs"]))]
        library_dirs.append(str(cuda["home"] / "lib64"))
        libraries += ["cudart_static", "dl", "rt", "stdc++"]
    else:
        macros.append(("LN_CUDA_OFF_REASON", '"%s"' % why_not))
    return Extension(
        "lora_native._native",
        sources=c_sources(),
        depends=sorted(str(p.relative_to(ROOT)) for p in CSRC.rglob("*.h")),
        include_dirs=["csrc/include", numpy_include()] + include_dirs,
        libraries=libraries,
        library_dirs=library_dirs,
        define_macros=macros,
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    ), cuda


def version():
    for line in (ROOT / "lora_native" / "_version.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip("\"'")
    raise RuntimeError("lora_native/_version.py has no __version__")


def main():
    ext, cuda = make_extension()

    class LoraDistribution(Distribution):
        lora_cuda = cuda

    setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt}, distclass=LoraDistribution)


# setuptools runs this file as __main__; tests import it to check the dependency messages.
if __name__ == "__main__":
    main()
