"""What a wheel or sdist of midillm-lite holds, and that an install from one works outside the checkout.

pyproject.toml lists the packages by hand (convert/ and models/ are mapped into midillm_lite), so the fast tests
check that list against the folders; the slow one builds an sdist, a wheel from it, installs that into a fresh venv
in a temp dir and makes music there with the bundled demo model.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from midillm_lite import models

try:
    import tomllib
except ImportError:  # Python 3.10: the [test] extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
BUNDLED_PACKAGE = f"midillm_lite.{models.BUNDLED_PACKAGE_DIR}"
CODE_FOLDERS = {"midillm_lite": "midillm_lite", "midillm_lite.convert": "convert"}  # package -> its folder
PROMPT = "A gentle piece for solo piano."
DEMO = "midillm-demo-q8_0"


def _folder_of(package: str) -> str:
    """The checkout folder setuptools reads a package from: the longest package-dir prefix, then the rest."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        mapped = PACKAGE_DIR.get(".".join(parts[:cut]))
        if mapped is not None:
            return "/".join([mapped, *parts[cut:]])
    return "/".join(parts)


def _code_packages() -> dict[str, str]:
    """Every folder with an __init__.py under the code folders, as package name -> folder."""
    found = {}
    for package, folder in CODE_FOLDERS.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / folder).parts
            found[".".join([package, *relative])] = "/".join([folder, *relative])
    return found


def _package_files() -> dict[str, str]:
    """Every file an install must hold, checkout path -> path in the wheel: each .py of the code, the bundled data."""
    files = {}
    for package, folder in CODE_FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT / folder).as_posix()
            files[f"{folder}/{relative}"] = f"{package.replace('.', '/')}/{relative}"
    for path in _bundled_files():
        files[f"{PACKAGE_DIR[BUNDLED_PACKAGE]}/{path.name}"] = f"midillm_lite/{models.BUNDLED_PACKAGE_DIR}/{path.name}"
    for relative in _code_package_data():
        files[relative] = relative  # e.g. serve's page: midillm_lite/server/static/app.js
    return files


def _code_package_data() -> list[str]:
    """Data files of the code's own packages (package-data other than the bundled models), as checkout paths."""
    found = []
    for package, patterns in SETUPTOOLS["package-data"].items():
        if package == BUNDLED_PACKAGE:
            continue
        folder = ROOT / package.replace(".", "/")
        found += [p.relative_to(ROOT).as_posix() for g in patterns for p in folder.glob(g) if p.is_file()]
    return sorted(found)


def test_the_serve_page_ships() -> None:
    assert {"midillm_lite/server/static/index.html", "midillm_lite/server/static/app.js"} <= set(_code_package_data())


def _bundled_files() -> list[Path]:
    folder = ROOT / PACKAGE_DIR[BUNDLED_PACKAGE]
    patterns = SETUPTOOLS["package-data"][BUNDLED_PACKAGE]
    return sorted(p for p in folder.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, g) for g in patterns))


def test_every_package_folder_is_in_pyproject() -> None:
    """A new subpackage (a folder with an __init__.py) that pyproject.toml leaves out would be missing from wheels."""
    found = _code_packages()
    listed = {p for p in PACKAGES if p != BUNDLED_PACKAGE}
    for package in sorted(set(found) - listed):
        pytest.fail(f"{found[package]}/ is a package but pyproject.toml's [tool.setuptools] packages lacks {package!r}")
    for package in sorted(listed - set(found)):
        pytest.fail(f"pyproject.toml lists {package!r}, but {_folder_of(package)}/ has no __init__.py")
    assert {p: _folder_of(p) for p in found} == found


def test_convert_and_models_are_mapped_into_the_package() -> None:
    assert PACKAGE_DIR["midillm_lite.convert"] == "convert"
    assert PACKAGE_DIR[BUNDLED_PACKAGE] == models.CHECKOUT_MODELS_DIR == "models"
    assert BUNDLED_PACKAGE in PACKAGES
    assert not (ROOT / "models" / "__init__.py").exists(), "models/ is data, not an importable package"


def test_package_data_is_the_registry_and_the_demo() -> None:
    """The registry, every bundled model and the demo's card ship; any other GGUF put in models/ stays out."""
    names = {p.name for p in _bundled_files()}
    bundled = [e.file for e in models.registry(ROOT / "models" / "registry.json") if e.bundled]
    assert bundled and {"registry.json", *bundled, "midillm-demo.md"} <= names
    assert all(not n.endswith(".gguf") or n in bundled for n in names)


def test_a_checkout_finds_its_models_folder() -> None:
    assert models.bundled_models_dir() == ROOT / "models"
    assert models.REGISTRY == ROOT / "models" / "registry.json"


def _llama_wheel() -> Path:
    """The llama-cpp-python wheel this environment was installed from (scripts/install-llama.sh's cache)."""
    try:
        direct = importlib.metadata.distribution("llama-cpp-python").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        direct = None
    url = json.loads(direct).get("url", "") if direct else ""
    path = Path(unquote(urlparse(url).path)) if url.startswith("file:") else None
    if path is None or path.suffix != ".whl" or not path.is_file():
        pytest.skip("llama-cpp-python was not installed from a wheel file at hand (`make install` keeps one)")
    return path


def _copy_sources(target: Path) -> None:
    """What the build reads, copied so that setuptools' build/ and *.egg-info land in the temp dir, not the checkout."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, target / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in {*CODE_FOLDERS.values(), PACKAGE_DIR[BUNDLED_PACKAGE]}:
        if folder == PACKAGE_DIR[BUNDLED_PACKAGE]:
            (target / folder).mkdir()
            for path in _bundled_files():
                shutil.copy2(path, target / folder / path.name)
        else:
            shutil.copytree(ROOT / folder, target / folder, ignore=skip)


def _run(args: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_wheel_from_sdist_installs_and_makes_music_outside_the_checkout(tmp_path: Path) -> None:
    llama_wheel = _llama_wheel()
    before = sorted(p.name for p in ROOT.iterdir())
    src, dist = tmp_path / "src", tmp_path / "dist"
    _copy_sources(src)

    # An sdist, then a wheel built from the unpacked sdist, as `python -m build` and pip do for a release.
    build_sdist = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    sdist = dist / _run([sys.executable, "-c", build_sdist, dist], cwd=src).stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp_path / "unpacked", **safe)
    missing = sorted(set(_package_files()) - in_sdist)
    assert not missing, f"the sdist lacks {missing}"
    pip = [sys.executable, "-m", "pip"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, tmp_path / "unpacked" / top],
        cwd=tmp_path,
    )
    wheel = next(dist.glob("midillm_lite-*.whl"))
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(set(_package_files().values()) - in_wheel)
    assert not missing, f"the wheel lacks {missing}"
    assert not [n for n in in_wheel if n.endswith(".gguf") and DEMO not in n], "only the demo model ships"

    # A fresh venv in the temp dir: our wheel, the cached llama-cpp-python wheel, the rest from pip's cache or PyPI.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run([*pip, "--python", python, "install", "-q", wheel, llama_wheel], cwd=tmp_path)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env[models.HOME_ENV] = str(tmp_path / "home")  # no user models: only what the wheel ships
    work = tmp_path / "work"
    work.mkdir()
    check = (
        "import midillm_lite, midillm_lite.convert as c, midillm_lite.models as m; "
        "print(midillm_lite.__file__); print(c.__file__); print(c.convert.__module__); "
        "print(' '.join(c.QUANT_NAMES)); print(m.REGISTRY)"
    )
    package_file, convert_file, convert_module, quants, registry = _run(
        [python, "-c", check], cwd=work, env=env
    ).stdout.split("\n")[:5]
    site = Path(package_file).parent
    assert site.is_relative_to(venv), f"midillm_lite came from {package_file}, not the fresh venv"
    assert Path(convert_file) == site / "convert" / "__init__.py"
    assert convert_module == "midillm_lite.convert.pipeline" and "q4_k_m" in quants.split()
    assert Path(registry) == site / models.BUNDLED_PACKAGE_DIR / "registry.json"

    cli = venv / "bin" / "midillm-lite"
    listing = json.loads(_run([cli, "models", "--json"], cwd=work, env=env).stdout)
    demo = next(item for item in listing if item["name"] == DEMO)
    assert demo["status"] == models.BUNDLED and demo["default"]
    assert Path(demo["path"]) == site / models.BUNDLED_PACKAGE_DIR / f"{DEMO}.gguf"

    gen = [cli, "gen", PROMPT, "--max-tokens", "30", "-n", "1", "--seed", "1", "-o", "out"]
    done = _run(gen, cwd=work, env=env)
    assert f"model: {DEMO}" in done.stderr
    assert (work / "out" / "gen_1.mid").stat().st_size > 0

    assert sorted(p.name for p in ROOT.iterdir()) == before, "the build wrote into the checkout"
