"""docker-compose.yml: valid for a real Compose client, and shaped as docs/operations.md says."""

from __future__ import annotations

from tests.deploy.conftest import COMPOSE_ENV, compose_config

PORTAL = ("migrate", "web", "worker", "beat")
SOCKET = "/var/run/docker.sock"


def _mounts(service: dict) -> list[str]:
    # Short syntax ("src:dst:mode") or long ({"source": ..., "target": ...}), by client.
    return [v if isinstance(v, str) else f"{v.get('source', '')}:{v['target']}" for v in service.get("volumes", [])]


def test_compose_file_is_valid(compose):
    assert set(compose["services"]) == {"postgres", "redis", *PORTAL}


def test_missing_secrets_are_refused_with_their_names(tmp_path):
    result = compose_config(tmp_path, {k: v for k, v in COMPOSE_ENV.items() if k != "POSTGRES_PASSWORD"})
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_portal_processes_share_one_image_on_the_host_network(compose):
    services = compose["services"]
    assert len({services[name]["image"] for name in PORTAL}) == 1
    # Workloads are reachable only from the host's network (the workloads bridge has
    # inter-container traffic off): the proxy and the worker's readiness checks need it.
    assert all(services[name]["network_mode"] == "host" for name in PORTAL)


def test_only_web_and_worker_get_the_engine_socket(compose):
    holders = {name for name, service in compose["services"].items() if any(SOCKET in m for m in _mounts(service))}
    assert holders == {"web", "worker"}
    for name in holders:
        assert compose["services"][name]["group_add"] == [COMPOSE_ENV["DOCKER_GID"]]


def test_stores_listen_on_loopback_only(compose):
    for name in ("postgres", "redis"):
        for port in compose["services"][name]["ports"]:
            published = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port['published']}"
            assert published.startswith("127.0.0.1:")


def test_broker_never_evicts_and_keeps_queued_tasks(compose):
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"


def test_processes_start_after_migrations_and_web_health_is_readyz(compose):
    services = compose["services"]
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "inspect ping" in " ".join(services["worker"]["healthcheck"]["test"])
