"""Turns an image spec (data, never Dockerfile text from people) into a Dockerfile.

Package names are checked against strict patterns before they are written anywhere, and pip
requirements travel as a file in the build context, never through a shell command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from packaging.requirements import InvalidRequirement, Requirement

from portal.runtime.base import LABEL_USER_DIRS

APT_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,99}(=[A-Za-z0-9.+:~-]{1,60})?$")
IMAGE_REFERENCE = re.compile(
    r"^(?:[a-z0-9.-]+(?::\d{1,5})?/)?"  # optional registry host[:port]/
    r"[a-z0-9][a-z0-9._/-]{0,199}"  # repository path
    r"(?::[A-Za-z0-9._-]{1,128})?(?:@sha256:[0-9a-f]{64})?$"  # optional tag and digest
)
USER = "jovyan"
UID = 1000
GID = 100  # "users", as in the Jupyter images
# Where workloads mount their volumes (job outputs, a workspace's home): made and given to the
# user in the image, so a new volume there is the user's from the start.
USER_DIRS = f"/output /home/{USER}"
CA_PATH = "/etc/dockyard/ca-certificates.crt"
LOCK_LINE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,199})==(?P<version>[A-Za-z0-9.+!_-]{1,100})"
    r" --hash=sha256:(?P<hash>[0-9a-f]{64})$"
)
VENV = "/opt/venv"
# What pip installed in the build, one `name==version --hash=sha256:...` line per distribution.
LOCK_PATH = "/etc/dockyard/pip.lock"
# An environment's start-up script, run before the workload's command (see `startup_command`).
STARTUP_PATH = "/etc/dockyard/startup.sh"
MAX_STARTUP_SCRIPT_CHARS = 20_000

# Runs inside the build, after `pip install --report`: turns pip's installation report into the
# lock. A distribution pip reports no sha256 for cannot be locked, so the build fails on it.
LOCK_SCRIPT = """\
import json, re, sys
report = json.load(open(sys.argv[1]))
lines = []
for item in report.get("install", []):
    name = re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
    version = item["metadata"]["version"]
    archive = (item.get("download_info") or {}).get("archive_info") or {}
    digest = (archive.get("hashes") or {}).get("sha256")
    if not digest and str(archive.get("hash", "")).startswith("sha256="):
        digest = archive["hash"][len("sha256="):]
    if not digest:
        sys.exit(f"pip reported no sha256 for {name} {version}: it cannot be locked")
    lines.append(f"{name}=={version} --hash=sha256:{digest}")
print("\\n".join(sorted(lines)))
"""


@dataclass(frozen=True)
class BuildSpec:
    """What to build. `pip_lock` (lines of a lock) replaces resolving `pip_requirements`: the
    build installs exactly those files with `--require-hashes --no-deps`."""

    base_image: str
    apt_packages: tuple[str, ...] = ()
    pip_requirements: tuple[str, ...] = ()
    pip_lock: tuple[str, ...] = ()
    startup_script: str = ""
    system_site_packages: bool = False  # a new venv also sees the base image's own packages


@dataclass(frozen=True)
class BuildContext:
    dockerfile: str
    files: dict[str, bytes] = field(default_factory=dict)


def clean_apt_packages(packages: list[str]) -> list[str]:
    bad = [p for p in packages if not APT_PACKAGE.fullmatch(p)]
    if bad:
        raise ValidationError({"apt_packages": f"Not a Debian package name: {', '.join(bad)}."})
    return sorted(set(packages))


def clean_pip_requirements(lines: list[str]) -> list[str]:
    """Each line one requirement (`name`, `name==1.2`, `name[extra]>=1`); no options, no URLs."""
    cleaned = []
    for line in (raw.strip() for raw in lines):
        if not line:
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            raise ValidationError({"pip_requirements": f"Not a pip requirement: {line!r}."}) from None
        if requirement.url:
            raise ValidationError({"pip_requirements": f"Direct URLs are not allowed: {line!r}."})
        cleaned.append(str(requirement))
    return cleaned


def clean_image_reference(reference: str, field_name: str = "pull_ref") -> str:
    reference = reference.strip()
    if not IMAGE_REFERENCE.fullmatch(reference):
        raise ValidationError({field_name: f"Not an image reference: {reference!r} (e.g. pytorch/pytorch:2.5.1)."})
    return reference


def clean_pip_lock(lines: list[str]) -> list[str]:
    """Each line `name==version --hash=sha256:<64 hex>`, as a build records it; sorted, no repeats."""
    cleaned = {}
    for line in (" ".join(raw.split()) for raw in lines):
        if not line:
            continue
        match = LOCK_LINE.fullmatch(line)
        if not match:
            raise ValidationError({"lock": f"Not a lock line (name==version --hash=sha256:...): {line!r}."})
        name = canonical_name(match["name"])
        if name in cleaned:
            raise ValidationError({"lock": f"{name} is locked twice."})
        cleaned[name] = f"{name}=={match['version']} --hash=sha256:{match['hash']}"
    return [cleaned[name] for name in sorted(cleaned)]


def clean_startup_script(text: str) -> str:
    text = (text or "").replace("\r\n", "\n").strip("\n")
    if len(text) > MAX_STARTUP_SCRIPT_CHARS:
        raise ValidationError(
            {"startup_script": f"The start-up script is longer than {MAX_STARTUP_SCRIPT_CHARS} characters."}
        )
    if "\0" in text:
        raise ValidationError({"startup_script": "The start-up script must be text."})
    return text + "\n" if text else ""


def canonical_name(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503): lowercase, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def render(spec: BuildSpec, *, ca_bundle: bytes | None = None, pip_index_url: str = "") -> BuildContext:
    """The Dockerfile and context files for a spec, on top of `base_image`.

    As root: the CA bundle, the index, the apt packages, and the non-root user every workload
    runs as (uid 1000, home /home/jovyan), owning /output, the virtualenv at /opt/venv and the
    lock file; /code exists for job code. Then as that user: the venv (reused when the base
    already has one, as an environment's catalog base does), the pip packages, and the lock
    of what pip installed at /etc/dockyard/pip.lock. The venv belongs to the workload's user,
    so a person can `pip install` more in a running workspace.
    """
    files: dict[str, bytes] = {
        "requirements.txt": "\n".join(spec.pip_requirements).encode() + b"\n",
        "dockyard-lock.py": LOCK_SCRIPT.encode(),
    }
    lines = [
        f"FROM {spec.base_image}",
        "USER root",
        "ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
    ]
    if ca_bundle:
        files["ca-certificates.crt"] = ca_bundle
        lines += [
            f"COPY ca-certificates.crt {CA_PATH}",
            f"ENV PIP_CERT={CA_PATH} REQUESTS_CA_BUNDLE={CA_PATH} SSL_CERT_FILE={CA_PATH}",
        ]
    if pip_index_url:
        lines.append(f"ENV PIP_INDEX_URL={_quoted(pip_index_url)}")
    if spec.apt_packages:
        packages = " ".join(spec.apt_packages)
        lines.append(
            "RUN apt-get update && apt-get install -y --no-install-recommends "
            f"{packages} && rm -rf /var/lib/apt/lists/*"
        )
    lines += [
        f"RUN (getent passwd {UID} >/dev/null"
        f" || useradd --create-home --uid {UID} --gid {GID} --shell /bin/bash {USER})"
        f" && mkdir -p /output /code {VENV} /etc/dockyard && : > {LOCK_PATH}"
        # A venv made as root by an earlier Dockyard is handed to the user once.
        f' && if [ -d {VENV}/bin ] && [ "$(stat -c %u {VENV}/bin)" != {UID} ]; then chown -R {UID}:{GID} {VENV}; fi'
        f" && mkdir -p {USER_DIRS} && chown {UID}:{GID} {USER_DIRS} {VENV} {LOCK_PATH}",
        "COPY requirements.txt dockyard-lock.py /etc/dockyard/",
        f'LABEL {LABEL_USER_DIRS}="{UID}:{GID} {USER_DIRS}"',
    ]
    if spec.startup_script:
        files["startup.sh"] = spec.startup_script.encode()
        lines.append(f"COPY startup.sh {STARTUP_PATH}")
    lines += [f"USER {UID}:{GID}", f"ENV HOME=/home/{USER}"]
    venv_flags = " --system-site-packages" if spec.system_site_packages else ""
    lines += [
        f"RUN [ -x {VENV}/bin/python3 ] || python3 -m venv{venv_flags} {VENV}",
        f"ENV PATH={VENV}/bin:$PATH VIRTUAL_ENV={VENV}",
    ]
    if spec.pip_lock:
        files["pip.lock"] = "\n".join(spec.pip_lock).encode() + b"\n"
        lines += [
            f"COPY --chown={UID}:{GID} pip.lock {LOCK_PATH}",
            f"RUN pip install --require-hashes --no-deps -r {LOCK_PATH}",
        ]
    elif spec.pip_requirements:
        lines.append(
            "RUN pip install -r /etc/dockyard/requirements.txt --report /tmp/pip-report.json"
            f" && python3 /etc/dockyard/dockyard-lock.py /tmp/pip-report.json > {LOCK_PATH}"
            " && rm /tmp/pip-report.json"
        )
    lines.append(f"WORKDIR /home/{USER}")
    return BuildContext(dockerfile="\n".join(lines) + "\n", files=files)


def startup_command(command: tuple[str, ...]) -> tuple[str, ...]:
    """A workload's command run after the environment's start-up script, in one shell: the
    script is sourced (what it exports reaches the command) and any failing line stops it."""
    return ("/bin/sh", "-c", f'set -e; . {STARTUP_PATH}; set +e; exec "$@"', "dockyard-startup", *command)


def _quoted(value: str) -> str:
    if not re.fullmatch(r"^https?://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]+$", value):
        raise ValidationError({"pip_index_url": f"Not a URL: {value!r}."})
    return value
