"""A fake Qualcomm AI Hub on 127.0.0.1, speaking the protobuf-over-HTTP API the real `qai_hub` client uses
(api/v1/devices, models, multipart uploads, jobs, downloads). The client under test is the real one, pointed
at this server with ClientConfig(api_url=...): only the far end of its HTTP transport is fake.

Compile jobs really compile: the uploaded ONNX goes through npuctl's local QNN compiler for the device's SoC,
and the result is served as AI Hub serves precompiled_qnn_onnx targets (a zip with one base folder)."""

from __future__ import annotations

import http.server
import io
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from qai_hub import public_api_pb2 as pb

from npuctl.artifacts.compile import compile_context
from npuctl.artifacts.errors import BuildError
from npuctl.schema.targets import SOCS

TOKEN = "good-token"
DEVICES = {info.aihub_device: info for info in SOCS.values() if info.aihub_device}


@dataclass
class FakeHub:
    base: str = ""
    rate_limit_job_posts: int = 0
    """Answer this many job submissions with 429 first."""
    fail_jobs: str | None = None
    """When set, every job ends FAILED with this reason."""
    polls_before_done: int = 0
    """Job status queries answered "running" before the final state."""
    models: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, dict[str, object]] = field(default_factory=dict)
    results: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        parts = urlsplit(url)
        path = [p for p in parts.path.split("/") if p]
        query = parse_qs(parts.query)
        self.requests.append(f"{method} {parts.path}")
        if path[:1] == ["s3"]:
            return self._storage(method, path, body)
        if headers.get("Authorization") != f"token {TOKEN}":
            return 401, b'{"detail": "Invalid token."}', {"Content-Type": "application/json"}
        route = path[2:]  # after api/v1
        if route == ["devices"]:
            name = query.get("name", [""])[0]
            found = [pb.Device(name=name, os="11", attributes=["framework:onnx", "framework:qnn",
                                                               f"chipset:{DEVICES[name].chipset}"])] if name in DEVICES else []
            return self._pb(pb.DeviceList(devices=found, total_query_count=len(found)))
        if route == ["models"] and method == "POST":
            model_id = f"m{len(self.models) + 1}"
            self.models[model_id] = b""
            return self._pb(pb.CreateUpdateResponse(id=model_id))
        if route[:1] == ["models"] and route[2:] == ["multipart_upload"]:
            if method == "GET":
                urls = pb.FileMultipartUploadURL(urls=[f"{self.base}/s3/put/{route[1]}"], upload_id="u1",
                                                 max_part_size=1 << 30)
                return self._pb(pb.FileUploadResponse(multipart_url=urls))
            return self._pb(pb.CreateUpdateResponse(id=route[1]))
        if route[:1] == ["models"] and route[2:] == ["download"]:
            link = pb.FileDownloadURL(url=f"{self.base}/s3/get/{route[1]}", filename="model.onnx.zip")
            return self._pb(pb.FileDownloadResponse(url=link))
        if route == ["jobs"] and method == "POST":
            if self.rate_limit_job_posts > 0:
                self.rate_limit_job_posts -= 1
                return 429, b'{"detail": "Request was throttled."}', {"Content-Type": "application/json"}
            return self._create_job(body)
        if route[:1] == ["jobs"] and len(route) == 2:
            return self._pb(self._job(route[1]))
        return 404, b"not found", {}

    def _create_job(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        request = pb.Job()
        request.ParseFromString(body)
        job = request.compile_job
        job_id = f"j{len(self.jobs) + 1}"
        device = job.devices.devices[0].name
        self.options.append(job.options)
        self.jobs[job_id] = {"model": job.model.model_id, "device": device, "polls": 0, "failure": self.fail_jobs}
        if self.fail_jobs is None:
            try:
                self.results[f"t{job_id}"] = self._compile(self.models[job.model.model_id], DEVICES[device].soc_model)
            except BuildError as exc:  # AI Hub reports a compile error as a FAILED job
                self.jobs[job_id]["failure"] = exc.message
        return self._pb(pb.CreateUpdateResponse(id=job_id))

    def _job(self, job_id: str) -> pb.Job:
        job = self.jobs[job_id]
        polls = int(job["polls"])  # type: ignore[call-overload]
        job["polls"] = polls + 1
        compile_job = pb.CompileJob(compile_job_id=job_id, model=pb.Model(model_id=str(job["model"])),
                                    device=pb.Device(name=str(job["device"])), name="fake")
        # Jobs are created with seed_target_model=true: the target model's id is known from the start.
        compile_job.target_model.CopyFrom(pb.Model(model_id=f"t{job_id}", name="model.onnx.zip",
                                                   model_type=pb.ModelType.MODEL_TYPE_ONNX, is_directory=True))
        if polls <= self.polls_before_done:  # the submit call itself reads the job once
            compile_job.job_state = pb.JobState.JOB_STATE_OPTIMIZING_MODEL
        elif job["failure"] is not None:
            compile_job.job_state = pb.JobState.JOB_STATE_FAILED
            compile_job.failure_reason = str(job["failure"])
        else:
            compile_job.job_state = pb.JobState.JOB_STATE_DONE
        return pb.Job(compile_job=compile_job)

    def _storage(self, method: str, path: list[str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        if method == "PUT" and path[1] == "put":
            self.models[path[2]] = body
            return 200, b"", {"ETag": '"etag-1"'}
        if method == "GET" and path[1] == "get" and path[2] in self.results:
            return 200, self.results[path[2]], {"Content-Type": "application/zip"}
        return 404, b"<Error><Code>NoSuchKey</Code><Message>missing</Message></Error>", {}

    @staticmethod
    def _compile(model: bytes, soc_model: int) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            source, out = Path(tmp) / "uploaded.onnx", Path(tmp) / "out"
            source.write_bytes(model)
            out.mkdir()
            compile_context(source, out, soc_model=soc_model, fp16=False, optimization_level=1)
            bundle = io.BytesIO()
            with zipfile.ZipFile(bundle, "w") as archive:
                for file in out.iterdir():
                    archive.write(file, f"model.onnx/{file.name}")
            return bundle.getvalue()

    @staticmethod
    def _pb(message: object) -> tuple[int, bytes, dict[str, str]]:
        return 200, message.SerializeToString(), {"Content-Type": "application/x-protobuf"}  # type: ignore[attr-defined]


def serve(hub: FakeHub) -> http.server.ThreadingHTTPServer:
    """Start `hub` on a free 127.0.0.1 port (sets hub.base); call .shutdown() when done."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, payload, headers = hub.handle(self.command, self.path, dict(self.headers), body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = _any

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
