#!/usr/bin/env bash
# Checks the Debian/Ubuntu packages lora-native builds against; installs the missing ones
# with apt-get when run as root, otherwise prints the exact command and fails.
# Usage: tools/system_deps.sh [--test]   (--test adds what `make test` needs: clang for the fuzzer,
#                                     chromium + its driver for the UI's browser test)
# EXTRA_PACKAGES="a b" adds packages to the check.
set -euo pipefail

packages=(gcc make pkg-config libstb-dev libyaml-dev libwebp-dev libjpeg-dev)
read -r -a extra <<<"${EXTRA_PACKAGES:-}"
packages+=("${extra[@]}")
if [[ "${1:-}" == "--test" ]]; then
    packages+=(clang libclang-rt-14-dev chromium chromium-driver)
fi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
    packages+=(python3 python3-venv python3-dev)
else
    # Python headers and venv: only the system Python needs Debian packages for them.
    if ! "$python" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
        packages+=(python3-dev)
    fi
    if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        packages+=(python3-venv)
    fi
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "lora-native: not a Debian/Ubuntu system; make sure these are installed: ${packages[*]}" >&2
    exit 0
fi

missing=()
for p in "${packages[@]}"; do
    # Some packages are virtual on some releases (libjpeg-dev -> libjpeg62-turbo-dev): accept a provider.
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed"; then
        if [[ "$p" == libjpeg-dev ]] && dpkg-query -W -f='${Status}\n' libjpeg62-turbo-dev libjpeg-turbo8-dev 2>/dev/null | grep -q "install ok installed"; then
            continue
        fi
        if [[ "$p" == libclang-rt-14-dev ]] && ! apt-cache show libclang-rt-14-dev >/dev/null 2>&1; then
            continue  # older releases ship the fuzzer runtime inside clang itself
        fi
        missing+=("$p")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]]; then
    echo "lora-native: installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "lora-native: missing system packages: ${missing[*]}" >&2
    echo "install them first, then run make again:" >&2
    echo "    sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
