#!/usr/bin/env bash
# Owns the llama-cpp-python build: picks CMAKE_ARGS for this host, builds the
# wheel once per (version, host, flags) and installs it into the given venv.
#
# Why not plain `pip install llama-cpp-python`: its default GGML_NATIVE=ON
# build turns on AMX on Intel Xeons that advertise it, and AMX faults on some
# of them (segfault in llama_decode on Q8_0/Q4_K_M). And pip's wheel cache keys
# a built wheel on the sdist alone, not on CMAKE_ARGS or the CPU, so a wheel
# built natively on one machine can be reused on another and die with SIGILL.
# We therefore keep our own cache, keyed on everything that shapes the binary.
#
# Usage: scripts/install-llama.sh PYTHON VERSION
#        scripts/install-llama.sh --print-args   (show the CMAKE_ARGS this host gets; builds nothing)
# Environment:
#   MIDILLM_BACKEND=auto|cpu|metal|cuda|vulkan  (default auto: Metal on macOS, else CPU)
#   CMAKE_ARGS      extra arguments, appended after ours (yours win)
#   MIDILLM_WHEEL_CACHE  cache folder (default ~/.cache/midillm-lite/wheels)
set -euo pipefail

PRINT_ONLY=0
if [ "${1:-}" = --print-args ]; then PRINT_ONLY=1; set -- python 0; fi
PY=${1:?python}
VERSION=${2:?version}
BACKEND=${MIDILLM_BACKEND:-auto}
# The two overrides exist for tests of the host table below.
OS=${MIDILLM_HOST_OS:-$(uname -s)}
ARCH=${MIDILLM_HOST_ARCH:-$(uname -m)}

args="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
if [ "$BACKEND" = auto ]; then
  if [ "$OS" = Darwin ]; then BACKEND=metal; else BACKEND=cpu; fi
fi
case "$BACKEND" in
  cpu) ;;
  metal) args="$args -DGGML_METAL=ON" ;;
  cuda) args="$args -DGGML_CUDA=ON" ;;
  vulkan) args="$args -DGGML_VULKAN=ON" ;;
  *) echo "install-llama: unknown MIDILLM_BACKEND '$BACKEND' (auto, cpu, metal, cuda, vulkan)" >&2; exit 2 ;;
esac

cpu_id=""
case "$ARCH" in
  x86_64|amd64)
    # Native tuning (AVX2/AVX-512/VNNI where present) but never AMX: the AMX
    # path faults on hosts that advertise it. Spelled as compiler flags because
    # GGML_AMX_* alone are overridden by GGML_NATIVE's -march=native.
    noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    args="$args -DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$noamx' -DCMAKE_CXX_FLAGS='$noamx'"
    cpu_id=$(grep -m1 -E '^flags' /proc/cpuinfo 2>/dev/null || sysctl -n machdep.cpu.features 2>/dev/null || true)
    ;;
  *)
    # ARM (Raspberry Pi, Apple Silicon) and others: llama.cpp's native
    # detection is right there and has no AMX to avoid.
    args="$args -DGGML_NATIVE=ON"
    cpu_id=$(grep -m1 -iE '^(Features|flags)' /proc/cpuinfo 2>/dev/null || sysctl -n machdep.cpu.brand_string 2>/dev/null || true)
    ;;
esac
args="$args ${CMAKE_ARGS:-}"
if [ "$PRINT_ONLY" = 1 ]; then echo "$args"; exit 0; fi

key=$(printf '%s\n' "$VERSION" "$OS" "$ARCH" "$args" "$cpu_id" | sha256sum 2>/dev/null | cut -c1-16 \
      || printf '%s\n' "$VERSION" "$OS" "$ARCH" "$args" "$cpu_id" | shasum -a 256 | cut -c1-16)
cache=${MIDILLM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/midillm-lite/wheels}/$key
wheel=$(ls "$cache"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -1 || true)

if [ -z "$wheel" ]; then
  echo "install-llama: building llama-cpp-python $VERSION for $OS/$ARCH ($BACKEND), a few minutes"
  echo "install-llama: CMAKE_ARGS=$args"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)} \
    "$PY" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -w "$tmp"
  mkdir -p "$cache"
  mv "$tmp"/llama_cpp_python-*.whl "$cache"/
  wheel=$(ls "$cache"/llama_cpp_python-"$VERSION"-*.whl | head -1)
else
  echo "install-llama: reusing $wheel"
fi
"$PY" -m pip install --force-reinstall --no-deps "$wheel"
printf '%s\n' "$args" > "$cache/CMAKE_ARGS"
