"""What a job writes (metrics, logs) and what a person uploads (code archives) is read with
limits: an oversized input leaves memory bounded and gets a clear sentence."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import textwrap
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs import spec
from jobs.models import Job
from portal.runtime.base import log_lines, log_tail
from portal.runtime.docker import DockerBackend
from portal.runtime.manifests import docker_container_config
from tests.conftest import RUN_LABEL, TEST_RUN
from tests.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
# Growth of the peak RSS allowed while a 200+ MiB input goes through.
BOUND_MIB = 48


def peak_growth(body: str, **env: str) -> dict:
    """Runs `body` in a fresh Django process and returns what it printed (JSON) plus `grew_mib`:
    how much the process's peak resident memory (VmHWM) grew while `body` ran."""
    script = textwrap.dedent("""
        import json
        def peak():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
        before = peak()
        result = main()
        print(json.dumps({"grew_mib": peak() - before, "result": result}))
    """)
    code = "import django\ndjango.setup()\n" + textwrap.dedent(body) + script
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- Metrics ------------------------------------------------------------------------------------


def test_a_huge_metrics_file_with_a_huge_line_is_read_in_bounded_memory_and_the_owner_is_told():
    out = peak_growth("""
        import tarfile
        from jobs.services import metrics_read_stream

        def stream():  # a tar of a 260 MiB metrics.jsonl, made on the fly: never held whole
            head = b'{"step": 0, "loss": 9}\\n'
            huge = 200 * 1024 * 1024
            tail = b"".join(b'{"step": %d, "loss": %f}\\n' % (i, 1 / i) for i in range(1, 2001))
            body_size = len(head) + huge + 1 + 60 * 1024 * 1024 + len(tail)
            info = tarfile.TarInfo("metrics.jsonl")
            info.size = body_size
            yield info.tobuf()
            yield head
            for _ in range(huge // (1024 * 1024)):
                yield b"x" * (1024 * 1024)
            yield b"\\n"
            for _ in range(60):
                yield b" " * 1023 + b"\\n" + b" " * (1024 * 1024 - 1024)
            yield tail
            yield b"\\0" * (-body_size % 512) + b"\\0" * 1024

        def main():
            read = metrics_read_stream(stream())
            return {"last": read.last, "points": len(read.series["loss"]), "notes": read.notes}
    """)
    assert out["grew_mib"] < BOUND_MIB, out
    result = out["result"]
    assert result["last"] == {"loss": 1 / 2000}
    assert result["points"] <= settings.DOCKYARD_JOB_METRICS_MAX_POINTS + 1
    assert result["notes"][0] == "metrics.jsonl is 260 MiB; only its last 20 MiB were read."


def test_metric_series_are_capped_in_number_and_thinned_keeping_the_last_point():
    lines = [json.dumps({"step": i, **{f"m{n}": i for n in range(150)}}) for i in range(1000)]
    limits = spec.MetricsLimits(max_bytes=MIB, max_line=64 * 1024, max_series=100, max_points=50)
    read = spec.metrics_parse(io.BytesIO("\n".join(lines).encode()), limits=limits)
    assert len(read.series) == 100
    assert all(len(points) <= 51 for points in read.series.values())
    assert read.series["m0"][0] == [0, 0] and read.series["m0"][-1] == [999, 999]
    assert read.notes == ["metrics.jsonl names more than 100 metrics; the others were not kept."]


def test_a_metrics_line_over_the_line_limit_is_skipped_and_counted():
    data = b'{"loss": 1}\n{"loss": ' + b"1" * 100_000 + b'}\n{"step": 5, "loss": 0.5}\n'
    limits = spec.MetricsLimits(max_bytes=MIB, max_line=1024, max_series=10, max_points=10)
    read = spec.metrics_parse(io.BytesIO(data), limits=limits)
    assert read.series == {"loss": [[0, 1], [5, 0.5]]}
    assert read.notes == ["1 line(s) of metrics.jsonl longer than 1 KiB were skipped."]


# --- Job lists ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_job_lists_never_load_metric_series_and_keep_a_fixed_query_count(api, alice, ready_image, small):
    client = api(alice)
    big = {f"m{n}": [[i, i] for i in range(2000)] for n in range(20)}

    def list_queries() -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/api/v1/jobs/?team=demo")
            assert response.status_code == 200
        return [q["sql"] for q in queries]

    spec_body = {"name": "t", "image": "python-minimal", "profile": "small", "team": "demo", "command": ["true"]}
    assert client.post("/api/v1/jobs/", spec_body, format="json").status_code == 201
    Job.objects.update(metrics=big, metrics_last={"m0": 1999})
    one = list_queries()
    for index in range(5):
        client.post("/api/v1/jobs/", {**spec_body, "name": f"t{index}"}, format="json")
    Job.objects.update(metrics=big, metrics_last={"m0": 1999})
    six = list_queries()
    assert len(six) == len(one)
    assert not any('"jobs_job"."metrics",' in sql or '"jobs_job"."metrics" ' in sql for sql in six)
    assert client.get("/api/v1/jobs/").json()[0]["metrics_last"] == {"m0": 1999}


# --- Logs ---------------------------------------------------------------------------------------


def test_a_log_line_longer_than_the_limit_is_cut_with_a_marker_in_bounded_memory():
    out = peak_growth("""
        from portal.runtime.base import log_lines, log_tail

        def chunks():  # one 256 MiB line, then two short ones
            for _ in range(256):
                yield b"y" * (1024 * 1024)
            yield b"\\nshort\\nlast"

        def main():
            text, cut = log_tail(log_lines(chunks(), max_bytes=16 * 1024), max_bytes=64 * 1024)
            return {"lines": [len(line) for line in text.split("\\n")], "cut": cut, "text_end": text[-60:]}
    """)
    assert out["grew_mib"] < BOUND_MIB, out
    result = out["result"]
    assert result["lines"][1:] == [5, 4] and not result["cut"]
    assert result["text_end"].endswith("y [line cut: longer than 16 KiB]\nshort\nlast")


def test_log_tail_keeps_only_the_end_in_whole_lines():
    text, cut = log_tail((f"line {i}" for i in range(100_000)), max_bytes=100)
    assert cut and text.endswith("line 99999") and len(text) <= 100
    assert list(log_lines([b"a\nb", b"c\n", b"d"], max_bytes=10)) == ["a", "bc", "d"]


def test_workload_containers_get_a_bounded_engine_log(engine):
    from portal.runtime.base import WorkloadSpec

    config = docker_container_config(
        WorkloadSpec(uid="u", kind="job", owner="a", team="t", image="i"), network="n", log_max_mb=7, log_files=2
    )
    assert config["log_config"] == {"type": "json-file", "config": {"max-size": "7m", "max-file": "2"}}

    backend = DockerBackend()
    uid = str(uuid.uuid4())
    handle = backend.start(WorkloadSpec(
        uid=uid, kind="probe", owner="alice", team="demo", image=settings.DOCKYARD_BASE_IMAGE,
        command=("python3", "-c", "print('z' * 1048576); print('after')"), labels={RUN_LABEL: TEST_RUN},
    ))  # fmt: skip
    try:
        container = engine.containers.get(handle.name)
        log_config = container.attrs["HostConfig"]["LogConfig"]
        assert log_config["Type"] == "json-file"
        assert log_config["Config"] == {"max-size": f"{settings.DOCKYARD_DOCKER_LOG_MAX_MB}m",
                                        "max-file": str(settings.DOCKYARD_DOCKER_LOG_FILES)}  # fmt: skip
        wait_for(lambda: backend.inspect(handle).state == "exited", timeout=60, what="the probe to exit")
        lines = list(backend.logs(handle))
        limit = settings.DOCKYARD_LOG_LINE_MAX_KB * 1024
        assert lines[0] == "z" * limit + f" [line cut: longer than {settings.DOCKYARD_LOG_LINE_MAX_KB} KiB]"
        assert lines[1:] == ["after"]
    finally:
        backend.remove(handle, keep_data=False)


# --- Code archives ------------------------------------------------------------------------------


def _zip_with_entries(count: int) -> bytes:
    """A zip64 archive of `count` empty files, written directly (zipfile would take seconds)."""
    local, central, offset = [], [], 0
    for index in range(count):
        name = b"f%07d" % index
        header = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
        local.append(header)
        central.append(struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 45, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0,
                                   len(name), 0, 0, 0, 0, 0, offset) + name)  # fmt: skip
        offset += len(header)
    directory = b"".join(central)
    end64 = offset + len(directory)
    return b"".join([
        *local, directory,
        struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), offset),
        struct.pack("<4sLQL", b"PK\x06\x07", 0, end64, 1),
        struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0),
    ])  # fmt: skip


def test_a_zip_declaring_too_many_entries_is_refused_before_they_are_loaded(tmp_path):
    path = tmp_path / "many.zip"
    path.write_bytes(_zip_with_entries(400_000))
    out = peak_growth(f"""
        from django.core.exceptions import ValidationError
        from jobs.archives import archive_inspect

        def main():
            with open({str(path)!r}, "rb") as upload:
                try:
                    archive_inspect(upload)
                except ValidationError as error:
                    return error.message_dict
            return None
    """, DOCKYARD_JOB_CODE_MAX_FILES="1000")  # fmt: skip
    assert out["grew_mib"] < 16, out
    assert out["result"] == {"code": ["The archive holds more than 1000 entries, the limit for code archives."]}


def test_a_tar_member_over_the_unpacked_limit_is_refused_as_it_is_listed(api, alice, ready_image, small, settings):
    settings.DOCKYARD_JOB_CODE_MAX_UNPACKED_MB = 1
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("weights.bin")
        info.size = 3 * MIB
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    data = out.getvalue()[: len(out.getvalue()) // 2]  # cut short: the rest is never read
    upload = io.BytesIO(data)
    upload.name = "code.tar.gz"
    spec_body = {"name": "t", "image": "python-minimal", "profile": "small", "team": "demo", "command": ["true"]}
    response = api(alice).post("/api/v1/jobs/", {"spec": json.dumps(spec_body), "code": upload}, format="multipart")
    assert response.status_code == 400, response.json()
    assert response.json()["errors"]["code"] == [
        "Unpacked, the archive would be larger than 1 MiB, the limit for code archives."
    ]
    assert not Job.objects.exists()
