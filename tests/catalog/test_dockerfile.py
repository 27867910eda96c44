"""Specs are data: names are checked before anything is written into a Dockerfile."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from portal.catalog import dockerfile


def test_rendered_dockerfile_installs_what_was_asked_as_a_non_root_user():
    context = dockerfile.render(
        dockerfile.BuildSpec(
            base_image="dockyard/base:bookworm", apt_packages=("git",), pip_requirements=("numpy>=2",)
        ),
        ca_bundle=b"CERT",
    )

    lines = context.dockerfile.splitlines()
    assert lines[0] == "FROM dockyard/base:bookworm"
    assert any("apt-get install -y --no-install-recommends git" in line for line in lines)
    assert "RUN pip install --disable-pip-version-check -r /etc/dockyard/requirements.txt" in lines
    assert lines[-3:] == ["USER 1000:100", "ENV HOME=/home/jovyan", "WORKDIR /home/jovyan"]
    assert context.files["requirements.txt"] == b"numpy>=2\n"
    assert context.files["ca-certificates.crt"] == b"CERT"
    assert any(line.startswith("ENV PIP_CERT=") for line in lines)


def test_no_ca_bundle_means_no_copy():
    context = dockerfile.render(dockerfile.BuildSpec(base_image="b"))
    assert "ca-certificates.crt" not in context.files
    assert "PIP_CERT" not in context.dockerfile


@pytest.mark.parametrize("name", ["vim; rm -rf /", "git && curl x", "$(id)", "Vim", ""])
def test_apt_names_that_could_inject_shell_are_refused(name):
    with pytest.raises(ValidationError):
        dockerfile.clean_apt_packages([name])


@pytest.mark.parametrize(
    "line", ["--index-url http://evil", "-e git+https://x/y", "pkg @ https://x/y.whl", "numpy; rm -rf /", "a b"]
)
def test_pip_options_urls_and_junk_are_refused(line):
    with pytest.raises(ValidationError):
        dockerfile.clean_pip_requirements([line])


def test_pip_requirements_are_normalised():
    assert dockerfile.clean_pip_requirements(["numpy >= 2", "", "pandas[performance]==2.2"]) == [
        "numpy>=2",
        "pandas[performance]==2.2",
    ]


@pytest.mark.parametrize("ref", ["pytorch/pytorch:2.5.1", "registry.local:5000/x/y:1", "ubuntu"])
def test_image_references_are_accepted(ref):
    assert dockerfile.clean_image_reference(ref) == ref


@pytest.mark.parametrize("ref", ["x y", "UPPER/case", "a:b:c:d", "-rm"])
def test_bad_image_references_are_refused(ref):
    with pytest.raises(ValidationError):
        dockerfile.clean_image_reference(ref)
