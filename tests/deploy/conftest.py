"""The deployment files as a person deploying Dockyard uses them: docker-compose.yml through a
real Compose client, the portal image built by the engine, the Kubernetes manifests as files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.processes import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
# What a person puts in .env for Compose (docs/operations.md, "Deploying on one host").
COMPOSE_ENV = {"POSTGRES_PASSWORD": "pg-secret", "REDIS_PASSWORD": "redis-secret", "DOCKER_GID": "999"}


def compose_client() -> list[str]:
    """`docker compose` where the plugin is installed, else Debian's docker-compose."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("No Compose client is installed: scripts/ensure-compose.sh installs one.")


def compose_config(folder: Path, env_file: dict[str, str]) -> subprocess.CompletedProcess:
    """`compose config` on a copy of docker-compose.yml beside a .env holding `env_file`."""
    shutil.copy(COMPOSE_FILE, folder / "docker-compose.yml")
    (folder / ".env").write_text("".join(f"{key}={value}\n" for key, value in env_file.items()))
    return subprocess.run(
        [*compose_client(), "--file", str(folder / "docker-compose.yml"), "config"],
        cwd=folder,
        env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(folder)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="session")
def compose(tmp_path_factory) -> dict:
    """docker-compose.yml as the Compose client resolves it (anchors merged, .env substituted)."""
    result = compose_config(tmp_path_factory.mktemp("compose"), COMPOSE_ENV)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)
