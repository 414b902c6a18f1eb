"""The installed package carries every data file the code reads.

The container (and any `pip install .`) runs from a wheel, not from src/, so a YAML or template that the
package-data globs miss works in every editable-install test and fails only inside the image. Building the wheel
takes about two seconds.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "visual_words"


def _files_under_src():
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_every_file_of_the_package(tmp_path):
    # Build from a copy without the editable install's egg-info: its SOURCES.txt lists every file and would hide a
    # gap in the globs, as a fresh checkout (the image's build context) does not have it.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "src" / "visual_words", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("visual_words-*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    expected = _files_under_src()
    assert any(name.endswith(".yaml") for name in expected)
    missing = sorted(expected - in_wheel)
    assert not missing, f"pyproject.toml's package-data misses {missing}"
