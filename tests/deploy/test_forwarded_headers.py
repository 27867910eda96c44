"""Every way of running the web process believes X-Forwarded-* only from named proxies, never
from `*`: otherwise a client could choose the address the audit log records."""

from __future__ import annotations

import re

import yaml

from tests.processes import REPO


def _trusted(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def test_the_kubernetes_config_names_the_proxies_it_trusts():
    config = next(
        doc
        for doc in yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "configmap.yaml").read_text())
        if doc and doc["kind"] == "ConfigMap"
    )
    trusted = _trusted(config["data"]["FORWARDED_ALLOW_IPS"])
    assert trusted and "*" not in trusted


def test_compose_trusts_only_the_proxy_on_this_host_by_default(compose):
    trusted = _trusted(compose["services"]["web"]["environment"]["FORWARDED_ALLOW_IPS"])
    assert trusted == ["127.0.0.1", "::1"]


def test_the_image_and_the_procfile_never_trust_every_address():
    image = re.search(r"^ENV FORWARDED_ALLOW_IPS=(\S+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert image is not None and "*" not in _trusted(image.group(1))
    web = next(line for line in (REPO / "Procfile").read_text().splitlines() if line.startswith("web:"))
    assert '--forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1,::1}"' in web


def test_no_deployment_file_trusts_every_address():
    files = [REPO / "Dockerfile", REPO / "Procfile", REPO / "docker-compose.yml", *(REPO / "deploy").rglob("*.yaml")]
    for path in files:
        text = path.read_text()
        assert not re.search(r"FORWARDED_ALLOW_IPS\W+\*", text), path
        assert "--forwarded-allow-ips=*" not in text and "--forwarded-allow-ips *" not in text, path
