"""Errors over HTTP, each in the shape of the system whose route was asked: a client of listmonk,
GreenArrow, Mailcoach or Mailrith parses its own error body."""
from typing import Optional

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """A request refused: its status, one plain sentence, a machine code (GreenArrow's
    `error_code`, Mailrith's `code`) and, for a field's fault, the field (Laravel's `errors`)."""

    def __init__(self, status: int, message: str, code: Optional[str] = None,
                 field: Optional[str] = None, errors: Optional[dict[str, list[str]]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.errors = status, message, field, errors
        self.code = code or _CODES.get(status, "error")


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 408: "request_timeout", 409: "conflict",
          413: "payload_too_large", 422: "validation_failed", 500: "internal_error"}

# Mailrith's `type` by status (its Errors guide: stable types and codes, plain messages).
_MAILRITH_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 405: "invalid_request_error", 408: "invalid_request_error",
                   409: "conflict_error", 413: "invalid_request_error", 422: "invalid_request_error",
                   500: "api_error"}


def listmonk(error: ApiError) -> JSONResponse:
    return JSONResponse({"message": error.message}, error.status)


def greenarrow(error: ApiError) -> JSONResponse:
    return JSONResponse({"success": False, "data": None, "error_code": error.code,
                         "error_message": error.message}, error.status)


def mailcoach(error: ApiError) -> JSONResponse:
    if error.status == 422:  # Laravel's validation answer
        return JSONResponse({"message": "The given data was invalid.",
                             "errors": error.errors or {error.field or "request": [error.message]}}, 422)
    return JSONResponse({"message": error.message}, error.status)


def mailrith(error: ApiError) -> JSONResponse:
    return JSONResponse({"error": {"type": _MAILRITH_TYPES.get(error.status, "api_error"),
                                   "code": error.code, "message": error.message}}, error.status)


# The routes of each system, most specific first; the page and anything else answer listmonk's
# plain {"message"} shape.
PREFIXES = (("/ga/api/", greenarrow), ("/api/subscriber-imports", mailcoach), ("/v1/", mailrith),
            ("/api/", listmonk))


def render(path: str, error: ApiError) -> JSONResponse:
    for prefix, shape in PREFIXES:
        if path.startswith(prefix):
            return shape(error)
    return listmonk(error)
