"""Sets of installed Python packages and how they differ: locks, pip lists, and what a person
installed in a running workspace. Pure functions: no database, no engine."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from jobs.archives import ChunkReader
from portal.catalog.dockerfile import LOCK_LINE, canonical_name

# "six-1.17.0.dist-info" or "foo-1.0-py3.11.egg-info": a distribution's metadata folder.
METADATA_DIR = re.compile(r"^(?P<name>[^/-]+)-(?P<version>[^/-]+)(?:-py\d[\d.]*)?\.(?:dist|egg)-info$")
PYVENV_VERSION = re.compile(r"^version(?:_info)?\s*=\s*(\d+)\.(\d+)", re.M)


@dataclass(frozen=True)
class Change:
    """One package that differs between two sets; an empty side means absent there."""

    name: str
    before: str
    after: str

    @property
    def kind(self) -> str:
        if not self.before:
            return "added"
        if not self.after:
            return "removed"
        try:
            return "upgraded" if Version(self.after) > Version(self.before) else "downgraded"
        except InvalidVersion:
            return "changed"

    def __str__(self) -> str:
        if self.kind == "added":
            return f"{self.name}=={self.after}" if self.after != "*" else self.name
        if self.kind == "removed":
            return f"{self.name}=={self.before}" if self.before != "*" else self.name
        return f"{self.name} {self.before} → {self.after}"


@dataclass(frozen=True)
class PackageDiff:
    changes: tuple[Change, ...] = ()

    def of_kind(self, *kinds: str) -> list[Change]:
        return [c for c in self.changes if c.kind in kinds]

    @property
    def added(self) -> list[Change]:
        return self.of_kind("added")

    @property
    def removed(self) -> list[Change]:
        return self.of_kind("removed")

    @property
    def upgraded(self) -> list[Change]:
        return self.of_kind("upgraded")

    @property
    def downgraded(self) -> list[Change]:
        return self.of_kind("downgraded", "changed")

    def __bool__(self) -> bool:
        return bool(self.changes)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "added": [str(c) for c in self.added],
            "removed": [str(c) for c in self.removed],
            "upgraded": [str(c) for c in self.upgraded],
            "downgraded": [str(c) for c in self.downgraded],
        }


def package_diff(before: Mapping[str, str], after: Mapping[str, str]) -> PackageDiff:
    """What changed from `before` to `after` (canonical name → version), sorted by name."""
    names = sorted(set(before) | set(after))
    changes = [
        Change(name, before.get(name, ""), after.get(name, ""))
        for name in names
        if not _same_version(before.get(name, ""), after.get(name, ""))
    ]
    return PackageDiff(tuple(changes))


def _same_version(a: str, b: str) -> bool:
    if a == b:
        return True
    if not a or not b:
        return False
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return False


def versions_of_lock(lines: Iterable[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = LOCK_LINE.fullmatch(line.strip())
        if match:
            found[canonical_name(match["name"])] = match["version"]
    return found


def versions_of_list(pairs: Iterable[Iterable[str]]) -> dict[str, str]:
    """From a pip list as the catalog records it: [[name, version], ...]."""
    return {canonical_name(name): version for name, version in pairs}


def versions_of_requirements(lines: Iterable[str]) -> dict[str, str]:
    """What requirement lines ask for: the pinned version (==), else "*" for any."""
    found = {}
    for line in lines:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        pins = [s.version for s in requirement.specifier if s.operator == "=="]
        found[canonical_name(requirement.name)] = pins[0] if len(pins) == 1 else "*"
    return found


def requirements_pinned(lines: Iterable[str], pins: Iterable[str]) -> list[str]:
    """Requirement lines with `pins` (name==version) added, replacing lines for the same names."""
    pinned = {canonical_name(Requirement(p).name): p for p in pins}
    kept = [line for line in lines if canonical_name(Requirement(line).name) not in pinned]
    return kept + [pinned[name] for name in sorted(pinned)]


def python_version_of_venv(pyvenv_cfg: str) -> str:
    """ "3.11" from a virtualenv's pyvenv.cfg, or "" when it does not say."""
    match = PYVENV_VERSION.search(pyvenv_cfg)
    return f"{match[1]}.{match[2]}" if match else ""


def site_packages_versions(chunks: Iterable[bytes]) -> dict[str, str]:
    """The distributions installed in a site-packages folder, from a tar stream of it: each
    metadata folder's name says the distribution and version (what `pip list` reads)."""
    found = {}
    reader = io.BufferedReader(ChunkReader(chunks), buffer_size=1024 * 1024)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for entry in tar:
            parts = entry.name.strip("/").split("/")
            if len(parts) != 2:
                continue
            match = METADATA_DIR.fullmatch(parts[1])
            if match:
                found[canonical_name(match["name"])] = match["version"].replace("_", "-")
    return found
