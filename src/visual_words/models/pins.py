"""The publisher's record of each paper checkpoint (registry/pins.yaml): expected sha256 and size per file.

A pin is what the original repository published; the model lock (lock.py) is what this machine baked. The bake
refuses files that differ from their pins, and every check compares the local bytes with them, so a mirror, a
user's folder or a future re-upload is accepted only when it holds the original publisher's bytes. A pin whose value
nobody published is `null`: such a file is reported as unverified, never guessed.

Imports only yaml and the standard library: the image build bakes with lock.py before the project is installed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

import yaml

PINS_FILE = "pins.yaml"
SHA256_RE = re.compile(r"[0-9a-f]{64}")


@functools.cache
def pins() -> dict[str, dict[str, Any]]:
    """Model key -> its pin record, validated (a malformed value names the key and file)."""
    raw = yaml.safe_load(resources.files("visual_words.registry").joinpath(PINS_FILE).read_text()) or {}
    for key, rec in raw.items():
        for name, size in (rec.get("listing") or {}).items():
            if size is not None and not isinstance(size, int):
                raise ValueError(f"registry/{PINS_FILE}: `{key}.listing.{name}` is not a whole number of bytes or null")
        for group in ("files", "single_file"):
            for name, f in (rec.get(group) or {}).items():
                where = f"registry/{PINS_FILE}: `{key}.{group}.{name}`"
                if not isinstance(f, dict) or set(f) - {"sha256", "size", "source"}:
                    raise ValueError(f"{where} must be a mapping of sha256, size and source")
                if f.get("sha256") is not None and not SHA256_RE.fullmatch(str(f["sha256"])):
                    raise ValueError(f"{where}.sha256 is not 64 lowercase hex digits")
                if f.get("size") is not None and not isinstance(f["size"], int):
                    raise ValueError(f"{where}.size is not a whole number of bytes")
                if (f.get("sha256") or f.get("size")) and not f.get("source"):
                    raise ValueError(f"{where} has a value but no `source` saying where it was found")
    return raw


def pin(key: str) -> dict[str, Any] | None:
    """The pin record of a registry key, or None (tiny and user-added models have none)."""
    return pins().get(key)


def known(f: Mapping[str, Any] | None) -> bool:
    return bool(f) and (f.get("sha256") is not None or f.get("size") is not None)


@dataclass
class Verdict:
    """How a set of files compares with the pins of one model."""

    verified: list[str] = field(default_factory=list)  # sha256 equal to the publisher's
    size_only: list[str] = field(default_factory=list)  # only a size was published, and it matches
    unverified: list[str] = field(default_factory=list)  # read by the loader, no published value
    problems: list[str] = field(default_factory=list)  # missing, or differing from the publisher
    differing: list[str] = field(default_factory=list)  # the files present whose bytes are not the publisher's

    def summary(self) -> str:
        parts = [f"{len(self.verified)} match the publisher's sha256"]
        if self.size_only:
            parts.append(f"{len(self.size_only)} its size only")
        if self.unverified:
            parts.append(f"{len(self.unverified)} unverified (no published hash: "
                         + ", ".join(self.unverified[:3]) + (", …" if len(self.unverified) > 3 else "") + ")")
        return "; ".join(parts)


def compare(rec: Mapping[str, Any] | None, present: Mapping[str, Mapping[str, Any]], complete: bool = True) -> Verdict:
    """Compare files with a pin record (`pin(key)`). `present`: name -> {"size": int, "sha256": str or None (not
    hashed)}.

    `complete`: `present` is every file the loader reads (a pinned file absent from it is missing); with False only
    the given files are judged (a single-file checkpoint's config folder holds no weights).
    """
    expected = (rec or {}).get("files") or {}
    out = Verdict()
    for name in sorted(set(expected) | set(present)):
        exp, got = expected.get(name), present.get(name)
        if got is None:
            if complete and known(exp):
                out.problems.append(f"missing file {name}")
            continue
        if not known(exp):
            out.unverified.append(name)
            continue
        if exp.get("size") is not None and got.get("size") != exp["size"]:
            out.problems.append(f"file {name} is not the publisher's (size {got.get('size')} ≠ {exp['size']})")
            out.differing.append(name)
        elif exp.get("sha256") is not None and got.get("sha256") is not None:
            if got["sha256"] != exp["sha256"]:
                out.problems.append(f"file {name} is not the publisher's (sha256 {got['sha256'][:12]}… ≠ "
                                    f"{exp['sha256'][:12]}…)")
                out.differing.append(name)
            else:
                out.verified.append(name)
        elif exp.get("sha256") is None:
            out.size_only.append(name)
        else:
            out.unverified.append(name)  # not hashed (a size-only check was asked for)
    return out


def single_file_match(rec: Mapping[str, Any] | None, size: int, sha256: str | None) -> tuple[str | None, list[str]]:
    """Which pinned single-file checkpoint of a pin record a file is: (name, []), or (None, [why not])."""
    singles = (rec or {}).get("single_file") or {}
    if not singles:
        return None, [f"no single-file checkpoint of this model is pinned in registry/{PINS_FILE}"]
    for name, exp in singles.items():
        if exp.get("size") is not None and size != exp["size"]:
            continue
        if sha256 is None or exp.get("sha256") in (None, sha256):
            return name, []
    names = ", ".join(f"{n} ({e.get('sha256', '')[:12]}…, {e.get('size')} bytes)" for n, e in singles.items())
    return None, [f"the file is none of the publisher's single-file checkpoints ({names})"]
