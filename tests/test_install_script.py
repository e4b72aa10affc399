"""The llama.cpp build flags chosen per host by scripts/install-llama.sh (no build is run)."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-llama.sh"
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def _args(**env):
    full = {k: v for k, v in os.environ.items() if k not in ("CMAKE_ARGS", "MIDILLM_BACKEND")}
    full.update(env)
    out = subprocess.run(["bash", str(SCRIPT), "--print-args"], env=full, capture_output=True, text=True)
    return out.returncode, out.stdout.strip(), out.stderr.strip()


@pytest.mark.parametrize("arch", ["x86_64", "amd64"])
def test_x86_builds_native_without_amx(arch):
    rc, args, _ = _args(MIDILLM_HOST_OS="Linux", MIDILLM_HOST_ARCH=arch)
    assert rc == 0
    assert "-DGGML_NATIVE=ON" in args
    assert f"-DCMAKE_C_FLAGS='{NO_AMX}'" in args and f"-DCMAKE_CXX_FLAGS='{NO_AMX}'" in args
    assert "GGML_BACKEND_DL" not in args and "ALL_VARIANTS" not in args


@pytest.mark.parametrize("arch", ["aarch64", "armv7l", "arm64"])
def test_arm_builds_native_and_never_passes_x86_flags(arch):
    rc, args, _ = _args(MIDILLM_HOST_OS="Linux", MIDILLM_HOST_ARCH=arch)
    assert rc == 0
    assert "-DGGML_NATIVE=ON" in args
    assert "amx" not in args


def test_macos_defaults_to_metal():
    rc, args, _ = _args(MIDILLM_HOST_OS="Darwin", MIDILLM_HOST_ARCH="arm64")
    assert rc == 0 and "-DGGML_METAL=ON" in args


@pytest.mark.parametrize(("backend", "flag"), [("cuda", "-DGGML_CUDA=ON"), ("vulkan", "-DGGML_VULKAN=ON")])
def test_backend_choice(backend, flag):
    rc, args, _ = _args(MIDILLM_BACKEND=backend, MIDILLM_HOST_OS="Linux", MIDILLM_HOST_ARCH="x86_64")
    assert rc == 0 and flag in args and NO_AMX in args


def test_user_cmake_args_come_last():
    rc, args, _ = _args(CMAKE_ARGS="-DGGML_NATIVE=OFF", MIDILLM_HOST_OS="Linux", MIDILLM_HOST_ARCH="x86_64")
    assert rc == 0 and args.endswith("-DGGML_NATIVE=OFF")


def test_unknown_backend_is_one_line_error():
    rc, _, err = _args(MIDILLM_BACKEND="tpu")
    assert rc == 2 and len(err.splitlines()) == 1 and "tpu" in err


def test_installed_build_has_no_amx_compiled_in():
    llama_cpp = pytest.importorskip("llama_cpp")
    info = llama_cpp.llama_print_system_info().decode()
    assert "AMX" not in info
