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
    user_from = lines.index("USER 1000:100")
    install = next(
        i for i, line in enumerate(lines) if line.startswith("RUN pip install -r /etc/dockyard/requirements.txt")
    )
    assert user_from < install  # pip runs as the workload's user, who owns the venv
    assert "--report" in lines[install] and "> /etc/dockyard/pip.lock" in lines[install]
    assert lines[-1] == "WORKDIR /home/jovyan"
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


def test_a_lock_is_installed_with_hashes_and_no_resolving():
    lock = ("six==1.17.0 --hash=sha256:" + "a" * 64,)
    context = dockerfile.render(dockerfile.BuildSpec(base_image="b", pip_requirements=("six",), pip_lock=lock))

    assert "RUN pip install --require-hashes --no-deps -r /etc/dockyard/pip.lock" in context.dockerfile
    assert "--report" not in context.dockerfile
    assert context.files["pip.lock"] == lock[0].encode() + b"\n"


def test_a_start_up_script_is_part_of_the_image_and_runs_before_the_command():
    context = dockerfile.render(dockerfile.BuildSpec(base_image="b", startup_script="export A=1\n"))

    assert "COPY startup.sh /etc/dockyard/startup.sh" in context.dockerfile
    command = dockerfile.startup_command(("python3", "train.py"))
    assert command[:2] == ("/bin/sh", "-c") and command[-2:] == ("python3", "train.py")


@pytest.mark.parametrize("line", ["six==1.17.0", "six>=1 --hash=sha256:" + "a" * 64, "six==1 --hash=md5:abc"])
def test_lock_lines_without_an_exact_version_and_sha256_are_refused(line):
    with pytest.raises(ValidationError):
        dockerfile.clean_pip_lock([line])
