"""Turns an image spec (data, never Dockerfile text from people) into a Dockerfile.

Package names are checked against strict patterns before they are written anywhere, and pip
requirements travel as a file in the build context, never through a shell command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from packaging.requirements import InvalidRequirement, Requirement

APT_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,99}(=[A-Za-z0-9.+:~-]{1,60})?$")
IMAGE_REFERENCE = re.compile(
    r"^(?:[a-z0-9.-]+(?::\d{1,5})?/)?"  # optional registry host[:port]/
    r"[a-z0-9][a-z0-9._/-]{0,199}"  # repository path
    r"(?::[A-Za-z0-9._-]{1,128})?(?:@sha256:[0-9a-f]{64})?$"  # optional tag and digest
)
USER = "jovyan"
UID = 1000
GID = 100  # "users", as in the Jupyter images
CA_PATH = "/etc/dockyard/ca-certificates.crt"


@dataclass(frozen=True)
class BuildSpec:
    base_image: str
    apt_packages: tuple[str, ...] = ()
    pip_requirements: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildContext:
    dockerfile: str
    files: dict[str, bytes] = field(default_factory=dict)


def clean_apt_packages(packages: list[str]) -> list[str]:
    bad = [p for p in packages if not APT_PACKAGE.match(p)]
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
    if not IMAGE_REFERENCE.match(reference):
        raise ValidationError({field_name: f"Not an image reference: {reference!r} (e.g. pytorch/pytorch:2.5.1)."})
    return reference


def render(spec: BuildSpec, *, ca_bundle: bytes | None = None, pip_index_url: str = "") -> BuildContext:
    """The Dockerfile and context files for a spec: a venv on the base image's python3, the
    packages asked for, and the non-root user every workload runs as (uid 1000, home
    /home/jovyan), owning /output; /code exists for job code."""
    files: dict[str, bytes] = {"requirements.txt": "\n".join(spec.pip_requirements).encode() + b"\n"}
    lines = [f"FROM {spec.base_image}", "USER root", "ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1"]
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
        "RUN python3 -m venv /opt/venv",
        "ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv",
        "COPY requirements.txt /etc/dockyard/requirements.txt",
    ]
    if spec.pip_requirements:
        lines.append("RUN pip install --disable-pip-version-check -r /etc/dockyard/requirements.txt")
    lines += [
        f"RUN (getent passwd {UID} >/dev/null"
        f" || useradd --create-home --uid {UID} --gid {GID} --shell /bin/bash {USER})"
        f" && mkdir -p /output /code && chown {UID}:{GID} /output",
        f"USER {UID}:{GID}",
        f"ENV HOME=/home/{USER}",
        f"WORKDIR /home/{USER}",
    ]
    return BuildContext(dockerfile="\n".join(lines) + "\n", files=files)


def _quoted(value: str) -> str:
    if not re.match(r"^https?://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]+$", value):
        raise ValidationError({"pip_index_url": f"Not a URL: {value!r}."})
    return value
