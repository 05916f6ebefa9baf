"""The project as a wheel: every module and the shipped nano model inside, and `from_pretrained("nano")` working
from the installed package with no clone beside it."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build from a copy of the files the wheel is made of, so the build leaves nothing in the repository."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "nextgpt", src / "nextgpt", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "assets" / "nano", src / "assets" / "nano")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=600)
    (found,) = out.glob("nextgpt-*.whl")
    return found


def test_wheel_holds_every_module_and_the_nano_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "nextgpt").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    nano = {f"nextgpt/assets/nano/{p.relative_to(ROOT / 'assets' / 'nano').as_posix()}"
            for p in (ROOT / "assets" / "nano").rglob("*") if p.is_file()}
    assert "nextgpt/assets/nano/nextgpt.safetensors" in nano and "nextgpt/assets/nano/README.md" in nano
    assert nano <= names, sorted(nano - names)
    assert not any(n.startswith(("tests/", "demo/", "assets/")) for n in names)


def test_installed_package_loads_the_nano_model(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import nextgpt; from nextgpt.config import SHIPPED; from nextgpt.model import NextGPT; "
            "model = NextGPT.from_pretrained('nano'); print(nextgpt.__file__); print(SHIPPED['nano']); "
            "print(model.config.name)")
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    module, folder, name = run.stdout.strip().splitlines()[-3:]
    assert Path(module).is_relative_to(site) and Path(folder) == site / "nextgpt" / "assets" / "nano"
    assert name.startswith("nextgpt-nano")
