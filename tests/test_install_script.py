"""The llama.cpp build flags chosen per host by scripts/install-llama.sh (no build is run)."""

import importlib.metadata
import os
import re
import subprocess
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: the [test] extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install-llama.sh"
RUNTIME_ONLY = ROOT / "scripts" / "llama-runtime-only.cmake"
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def _run(*argv, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("CMAKE_ARGS", "MIDILLM_BACKEND", "CC", "CXX")}
    full.update(env)
    out = subprocess.run(["bash", str(SCRIPT), *argv], env=full, capture_output=True, text=True)
    return out.returncode, out.stdout.strip(), out.stderr.strip()


def _args(**env):
    return _run("--print-args", **env)


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


def test_llama_version_has_one_source() -> None:
    """pyproject.toml's pin is the version: the script reads it, and the Makefile passes none of its own."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d.split("==", 1)[1] for d in deps if re.match(r"llama-cpp-python\s*==", d)]
    rc, version, _ = _run("--print-version")
    assert rc == 0 and [version] == pins
    makefile = (ROOT / "Makefile").read_text()
    assert re.findall(r"^\tscripts/install-llama\.sh .*$", makefile, re.M) == ["\tscripts/install-llama.sh $(PY)"]
    assert version not in makefile


def test_builds_only_what_the_runtime_loads() -> None:
    """No multimodal library, tools, server, tests or examples, and the common library shadowed off."""
    rc, args, _ = _args(MIDILLM_HOST_OS="Linux", MIDILLM_HOST_ARCH="x86_64")
    assert rc == 0
    for flag in ("LLAVA_BUILD", "LLAMA_BUILD_TOOLS", "LLAMA_BUILD_SERVER", "LLAMA_BUILD_TESTS", "LLAMA_BUILD_EXAMPLES"):
        assert f"-D{flag}=OFF" in args
    assert f"-DCMAKE_PROJECT_llama.cpp_INCLUDE='{RUNTIME_ONLY}'" in args
    assert "set(LLAMA_BUILD_COMMON OFF)" in RUNTIME_ONLY.read_text()


def test_nothing_we_import_needs_the_multimodal_library() -> None:
    """LLAVA_BUILD=OFF leaves out libmtmd: only llama_cpp's image chat handlers load it, and we never import them."""
    sources = [*ROOT.glob("midillm_lite/**/*.py"), *ROOT.glob("convert/**/*.py")]
    assert sources
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for name in ("llava", "mtmd", "llama_chat_format", "llama_cpp.server"):
            assert name not in text, f"{path.relative_to(ROOT)} uses {name}, which the build leaves out"


@pytest.mark.parametrize("variable", ["CC", "CXX"])
def test_a_missing_compiler_is_one_line_before_the_build(tmp_path: Path, variable: str) -> None:
    rc, out, err = _run("/nonexistent/python", MIDILLM_WHEEL_CACHE=str(tmp_path), **{variable: "/nonexistent/cc"})
    assert rc == 2 and out == "" and len(err.splitlines()) == 1
    assert "/nonexistent/cc" in err and "apt install build-essential" in err and "xcode-select" in err
    assert list(tmp_path.iterdir()) == [], "nothing is built or cached"


def test_usage_errors_are_one_line() -> None:
    for argv in ([], ["--bogus"]):
        rc, _, err = _run(*argv)
        assert rc == 2 and len(err.splitlines()) == 1 and "usage" in err


def test_installed_build_is_runtime_only() -> None:
    """The installed llama-cpp-python holds libllama and libggml, none of the libraries the build leaves out."""
    pytest.importorskip("llama_cpp")
    libs = {Path(str(f)).name.split(".")[0] for f in importlib.metadata.files("llama-cpp-python") or []}
    assert {"libllama", "libggml"} <= libs
    assert not libs & {"libmtmd", "libllava", "libllama-common"}, f"left-out libraries were built: {sorted(libs)}"
