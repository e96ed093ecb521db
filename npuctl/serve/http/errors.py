"""HTTP errors as JSON: OpenAI's shape on /v1 (`{"error": {"message", "type", "param", "code"}}`), the
Open Inference Protocol's on /v2 and Ollama's on /api (`{"error": "<message>"}`). Clients never see a traceback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from npuctl.errors import NpuctlError

_OPENAI_TYPES = {
    429: "rate_limit_error",
    499: "client_closed_request",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class ApiError(NpuctlError):
    """A request that gets an error answer. 4xx: the client's doing; 5xx: the server's state."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.details = dict(details or {})
        """More fields of the error object (the control API's `errors` of an invalid manifest)."""

    @property
    def openai_type(self) -> str:
        if self.status in _OPENAI_TYPES:
            return _OPENAI_TYPES[self.status]
        return "invalid_request_error" if self.status < 500 else "server_error"


def openai_error(exc: ApiError) -> JSONResponse:
    body = {"error": {"message": exc.message, "type": exc.openai_type, "param": exc.param, "code": exc.code,
                      **exc.details}}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def oip_error(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


def error_response(exc: ApiError, path: str) -> JSONResponse:
    """The error in the shape of the API the path belongs to (Ollama's /api has the Open Inference Protocol's)."""
    return oip_error(exc) if path.startswith(("/v2", "/api/")) else openai_error(exc)
