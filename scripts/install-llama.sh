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
# Only what the runtime loads is compiled: libllama and libggml, which
# llama_cpp's ctypes bindings open (llama_cpp.llama_cpp, llama_cpp._ggml).
# Left out: the multimodal library (mtmd/llava, LLAVA_BUILD=OFF; only its
# image chat handlers load it), llama.cpp's tools, server, tests and examples,
# and its common library (scripts/llama-runtime-only.cmake). That is 83 build
# steps (74 compiles) instead of 193 (178) with llama-cpp-python's defaults.
#
# Usage: scripts/install-llama.sh PYTHON        build (or reuse) the wheel, install it into PYTHON's environment
#        scripts/install-llama.sh --wheel [PYTHON]  build (or reuse) the wheel, print its path (pipx, uv, pip)
#        scripts/install-llama.sh --print-args     the CMAKE_ARGS this host gets; builds nothing
#        scripts/install-llama.sh --print-version  the llama-cpp-python version: pyproject.toml's pin, the one source
# Environment:
#   MIDILLM_BACKEND=auto|cpu|metal|cuda|vulkan  (default auto: Metal on macOS, else CPU)
#   CMAKE_ARGS      extra arguments, appended after ours (yours win)
#   MIDILLM_WHEEL_CACHE  cache folder (default ~/.cache/midillm-lite/wheels)
#   CC, CXX         the compilers (default: cc and c++ on PATH)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYPROJECT="$HERE/../pyproject.toml"
RUNTIME_ONLY="$HERE/llama-runtime-only.cmake"

die() { echo "install-llama: $*" >&2; exit 2; }
say() { echo "install-llama: $*" >&2; }

MODE=install
case "${1:-}" in
  --print-args) MODE=args ;;
  --print-version) MODE=version ;;
  --wheel) MODE=wheel; PY=${2:-python3} ;;
  ""|-*) die "usage: scripts/install-llama.sh PYTHON | --wheel [PYTHON] | --print-args | --print-version" ;;
  *) PY=$1 ;;
esac

VERSION=$(sed -n 's/^[[:space:]]*"llama-cpp-python==\([0-9][0-9a-z.]*\)".*/\1/p' "$PYPROJECT" 2>/dev/null | head -1)
[ -n "$VERSION" ] || die "no \"llama-cpp-python==VERSION\" pin found in $PYPROJECT"
if [ "$MODE" = version ]; then echo "$VERSION"; exit 0; fi

BACKEND=${MIDILLM_BACKEND:-auto}
# The two overrides exist for tests of the host table below.
OS=${MIDILLM_HOST_OS:-$(uname -s)}
ARCH=${MIDILLM_HOST_ARCH:-$(uname -m)}

lean="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF"
lean="$lean -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF"
args="$lean -DCMAKE_PROJECT_llama.cpp_INCLUDE='$RUNTIME_ONLY'"
if [ "$BACKEND" = auto ]; then
  if [ "$OS" = Darwin ]; then BACKEND=metal; else BACKEND=cpu; fi
fi
case "$BACKEND" in
  cpu) ;;
  metal) args="$args -DGGML_METAL=ON" ;;
  cuda) args="$args -DGGML_CUDA=ON" ;;
  vulkan) args="$args -DGGML_VULKAN=ON" ;;
  *) die "unknown MIDILLM_BACKEND '$BACKEND' (auto, cpu, metal, cuda, vulkan)" ;;
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
if [ "$MODE" = args ]; then echo "$args"; exit 0; fi

# The key hashes what shapes the binary, with the runtime-only hook by content, not by the checkout's path,
# so every checkout on this machine shares one build.
key_args=${args//"$RUNTIME_ONLY"/runtime-only.cmake}
key=$( (printf '%s\n' "$VERSION" "$OS" "$ARCH" "$key_args" "$cpu_id"; cat "$RUNTIME_ONLY") \
       | { sha256sum 2>/dev/null || shasum -a 256; } | cut -c1-16)
cache=${MIDILLM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/midillm-lite/wheels}/$key
wheel=$(ls "$cache"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -1 || true)

# What a build needs, checked before pip starts, so a missing tool is one line and not a CMake error at the end.
HOW="Debian/Ubuntu/Raspberry Pi OS: sudo apt install build-essential cmake; macOS: xcode-select --install"
check_build_tools() {
  local cc=${CC:-cc} cxx=${CXX:-c++}
  command -v "${cc%% *}" >/dev/null 2>&1 || die "no C compiler ('$cc'); llama.cpp is compiled here. Install one ($HOW), or set CC"
  command -v "${cxx%% *}" >/dev/null 2>&1 || die "no C++ compiler ('$cxx'); llama.cpp is compiled here. Install one ($HOW), or set CXX"
  "$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip; on Debian/Ubuntu/Raspberry Pi OS: sudo apt install python3-venv python3-pip"
  # scikit-build-core (llama-cpp-python's build backend) uses a CMake >= 3.21 on PATH, else fetches one from PyPI.
  local have
  have=$(cmake --version 2>/dev/null | sed -n '1s/[^0-9]*\([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p')
  if [ -z "$have" ] || [ "${have% *}" -lt 3 ] || { [ "${have% *}" -eq 3 ] && [ "${have#* }" -lt 21 ]; }; then
    say "no CMake >= 3.21 on PATH: pip fetches one from PyPI for this build (a system one: sudo apt install cmake / brew install cmake)"
  fi
}

# pip's download and build-environment steps, the backend's *** phases, and one line per compile step (ninja's
# [n/N] with the source file, or make's [ n%]); everything else goes only to the log.
progress() {
  awk '
    { sub(/^ +/, "") }  # pip -v indents what the backend prints
    /^\[ *[0-9]+\/[0-9]+\]/ {
      what = ""; verb = ""
      for (i = 2; i < NF; i++) if ($i == "-c") what = $(i + 1)
      if (what == "") for (i = 2; i < NF; i++) if ($i == "-o") { what = $(i + 1); verb = "link " }
      if (what == "") what = $2
      n = split(what, parts, "/"); print "install-llama: " $1 " " verb parts[n]; fflush(); next
    }
    /^\[ *[0-9]+%\]/ || /^\*\*\* / || /^(Collecting|Downloading|Installing build dependencies|Building wheel for)[: ]/ {
      print "install-llama: " $0; fflush()
    }
  ' >&2
}

if [ -z "$wheel" ]; then
  check_build_tools
  mkdir -p "$cache"
  log="$cache/build.log"
  jobs=${CMAKE_BUILD_PARALLEL_LEVEL:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}
  say "building llama-cpp-python $VERSION for $OS/$ARCH ($BACKEND) with $jobs jobs, once: 83 steps, measured at" \
    "5.6 CPU-minutes on x86-64 (about 3 minutes on 2 idle cores; far longer on a busy machine or a Raspberry Pi)"
  say "CMAKE_ARGS=$args"
  say "full log: $log"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  start=$SECONDS
  set +e
  CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL=$jobs \
    "$PY" -m pip wheel -v --no-deps --no-cache-dir --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -w "$tmp" </dev/null 2>&1 | tee "$log" | progress
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    tail -n 25 "$log" >&2
    die "building llama-cpp-python failed (the log's last lines are above; all of it: $log)"
  fi
  elapsed=$((SECONDS - start))
  mv "$tmp"/llama_cpp_python-*.whl "$cache"/
  wheel=$(ls "$cache"/llama_cpp_python-"$VERSION"-*.whl | head -1)
  say "built in $((elapsed / 60)) min $((elapsed % 60)) s: $wheel"
else
  say "reusing $wheel"
fi
printf '%s\n' "$args" > "$cache/CMAKE_ARGS"
if [ "$MODE" = wheel ]; then echo "$wheel"; exit 0; fi
"$PY" -m pip install --force-reinstall --no-deps "$wheel"
