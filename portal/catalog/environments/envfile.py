"""The environment file: a small YAML document teams keep in git to recreate an environment
on another Dockyard. Secret values are never in it, only their names. Pure: no database."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from django.core.exceptions import ValidationError

FORMAT = "dockyard.environment/v1"
MAX_BYTES = 256 * 1024
HEADER = (
    "# A Dockyard environment. Import it with POST /api/v1/environments/import or the Import page.\n"
    "# `lock` is what the build installed; an import installs exactly that (pip --require-hashes).\n"
    "# Secret values are not in this file: set them again after importing.\n"
)
KEYS = (
    "format", "slug", "name", "description", "revision", "base", "apt", "pip", "lock", "env", "secret_env",
    "profile", "startup_script",
)  # fmt: skip


@dataclass(frozen=True)
class EnvironmentFile:
    slug: str
    name: str
    base_image: str
    base_digest: str = ""
    description: str = ""
    revision: int | None = None
    apt: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    lock: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secret_env: tuple[str, ...] = ()  # names only
    profile: str = ""
    startup_script: str = ""


class _Dumper(yaml.SafeDumper):
    """Block style (|) for multi-line text, so a start-up script reads as itself."""


def _text(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def dump(document: EnvironmentFile) -> str:
    data = {
        "format": FORMAT,
        "slug": document.slug,
        "name": document.name,
        "description": document.description,
        "revision": document.revision,
        "base": {"image": document.base_image, "digest": document.base_digest},
        "apt": list(document.apt),
        "pip": list(document.pip),
        "lock": list(document.lock),
        "env": dict(document.env),
        "secret_env": list(document.secret_env),
        "profile": document.profile or None,
        "startup_script": document.startup_script,
    }
    return HEADER + yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=200)


def parse(text: str) -> EnvironmentFile:
    """Reads and checks a file's shape; every problem is named at once. The values themselves
    (package names, lock lines, env names) are checked by the services like any other input."""
    if len(text.encode()) > MAX_BYTES:
        raise ValidationError(f"The file is larger than {MAX_BYTES // 1024} KiB.")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValidationError(f"The file is not YAML: {error}") from None
    if not isinstance(data, dict):
        raise ValidationError("The file must be a YAML mapping, as `export` writes it.")
    problems = []
    if data.get("format") != FORMAT:
        problems.append(f"format: expected {FORMAT!r}.")
    problems += [f"{key}: not a field of an environment file." for key in data if key not in KEYS]
    base = data.get("base")
    if not isinstance(base, dict) or not isinstance(base.get("image"), str) or not base.get("image"):
        problems.append("base: give {image: <catalog image slug>, digest: sha256:...}.")
        base = {}
    strings = {key: data.get(key) or "" for key in ("slug", "name", "description", "profile", "startup_script")}
    problems += [f"{key}: text expected." for key, value in strings.items() if not isinstance(value, str)]
    problems += [f"{key}: required." for key in ("slug", "name") if not strings[key]]
    lists = {key: data.get(key) or [] for key in ("apt", "pip", "lock", "secret_env")}
    for key, value in lists.items():
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            problems.append(f"{key}: a list of text lines expected.")
    env = data.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        problems.append("env: a mapping of names to text values expected.")
    revision = data.get("revision")
    if revision is not None and (not isinstance(revision, int) or isinstance(revision, bool)):
        problems.append("revision: a whole number expected.")
    if problems:
        raise ValidationError(problems)
    return EnvironmentFile(
        slug=strings["slug"], name=strings["name"], description=strings["description"], revision=revision,
        base_image=base["image"], base_digest=str(base.get("digest") or ""), apt=tuple(lists["apt"]),
        pip=tuple(lists["pip"]), lock=tuple(lists["lock"]), env={str(k): v for k, v in env.items()},
        secret_env=tuple(lists["secret_env"]), profile=strings["profile"], startup_script=strings["startup_script"],
    )  # fmt: skip
