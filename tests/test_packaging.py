"""pyproject.toml declares every folder that ships a file, so an install prints no warning of the project's own
("Package 'audiotrain.conf.backend' is absent from the packages configuration") and the wheel holds every config."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {".py", ".yaml", ".json"}


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder(package: str, package_dir: dict[str, str]) -> Path:
    """The source folder of a dotted package name under setuptools' package-dir mapping."""
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        head = ".".join(parts[:n])
        if head in package_dir:
            return ROOT / package_dir[head] / Path(*parts[n:])
    return ROOT / Path(*parts)


def _shipping_folders(top: Path) -> set[Path]:
    return {p.parent for p in top.rglob("*") if p.suffix in SHIPPED and "__pycache__" not in p.parts}


def test_every_folder_with_code_or_config_is_a_declared_package():
    st = _setuptools()
    declared = {_folder(p, st["package-dir"]) for p in st["packages"]}
    tops = [ROOT / "audiotrain", ROOT / "conf", *(d for d in (ROOT / "plugins").iterdir() if d.is_dir())]
    missing = sorted(str(f.relative_to(ROOT)) for top in tops for f in _shipping_folders(top) - declared)
    assert not missing, f"add these folders to [tool.setuptools] packages in pyproject.toml: {missing}"
    absent = sorted(p for p in st["packages"] if not _folder(p, st["package-dir"]).is_dir())
    assert not absent, f"declared packages with no folder: {absent}"


def test_licence_is_an_spdx_expression_with_its_file():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"  # a string, not the deprecated {text = ...} table
    assert all((ROOT / f).is_file() for f in project["license-files"])
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
