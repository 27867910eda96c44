"""Names that reach a Dockerfile or a lock match whole: a line break cannot carry a second line."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from portal.catalog.dockerfile import BuildSpec, clean_apt_packages, render


@pytest.mark.parametrize("name", ["curl\n", "curl=7.88\n", "curl\nRUN touch /evil"])
def test_an_apt_package_name_with_a_line_break_is_refused(name):
    with pytest.raises(ValidationError, match="Not a Debian package name"):
        clean_apt_packages([name])


def test_a_pip_index_url_with_a_line_break_is_refused():
    spec = BuildSpec(base_image="debian:12", apt_packages=(), pip_requirements=("numpy",))
    with pytest.raises(ValidationError, match="Not a URL"):
        render(spec, pip_index_url="https://pypi.example/simple\n")
