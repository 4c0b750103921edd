"""Model files load only from the configured model directory (issue 24): a TorchScript or pickle file runs code
when it loads, so whoever can point LATEST (or fraud/sentiment.model_version) elsewhere could run their code in the
job. `contained` resolves the version folder, symlinks included, and refuses anything outside the model dir."""

from __future__ import annotations

from pathlib import Path


class ModelPathError(ValueError):
    """A model version that resolves outside its model directory."""


def contained(base: str | Path, version: str) -> Path:
    """`base/version`, refused when `version` is absolute, has more than one part, or resolves (after every
    symlink) outside `base`'s own resolved path. The files inside are checked the same way by `check_files`."""
    base_r = Path(base).resolve()
    v = Path(version)
    if not version or v.is_absolute() or len(v.parts) != 1 or version in (".", ".."):
        raise ModelPathError(f"model version {version!r} is not a folder name inside {base}")
    path = Path(base) / version
    real = path.resolve()
    if real.parent != base_r:
        raise ModelPathError(f"model version {version!r} resolves to {real}, outside the model dir {base_r}")
    check_files(real, base_r)
    return path


def check_files(folder: Path, base_r: Path) -> None:
    """Every file in `folder` (a version folder) resolves inside `base_r`."""
    if not folder.is_dir():
        return
    for f in folder.rglob("*"):
        if not f.resolve().is_relative_to(base_r):
            raise ModelPathError(f"{f} resolves to {f.resolve()}, outside the model dir {base_r}")
