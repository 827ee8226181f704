"""API keys, checked each system's own way (spec §7):

- listmonk: `Authorization: Basic base64(NAME:token)` or `Authorization: token NAME:token`;
- GreenArrow: `Authorization: Basic base64(NAME:token)`;
- Mailcoach and Mailrith: `Authorization: Bearer token`.

A key is looked up on every request (a revoked one stops at once) and compared in constant time
(`catalog.authenticate`); a key without the route's permission is refused as that system does.
"""
import base64
import binascii
from typing import Callable, Optional

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from mail_pipeline import catalog
from service.api.errors import ApiError

IMPORT = "subscribers:import"
EXPORT = "subscribers:export"

# How each system answers a missing or wrong key, and a key without the permission.
_REFUSALS = {
    "listmonk": ((403, "invalid API credentials"), (403, "permission denied: {permission}")),
    "greenarrow": ((401, "invalid or missing API credentials"), (403, "permission denied: {permission}")),
    "mailcoach": ((401, "Unauthenticated."), (403, "This action is unauthorized.")),
    "mailrith": ((401, "invalid or missing API key"), (403, "this API key lacks the {permission} permission")),
    "page": ((401, "sign in with an API key"), (403, "this API key lacks the {permission} permission")),
}
_SCHEMES = {"listmonk": ("basic", "token"), "greenarrow": ("basic",), "mailcoach": ("bearer",),
            "mailrith": ("bearer",), "page": ("basic", "bearer", "token")}
COOKIE = "mail_pipeline_key"


def credentials(header: str, schemes: tuple[str, ...]) -> Optional[tuple[Optional[str], str]]:
    """(name, secret) from an Authorization header in one of `schemes`; None when it is missing,
    malformed or in another scheme."""
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme not in schemes or not value:
        return None
    if scheme == "bearer":
        return None, value
    if scheme == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    name, sep, secret = value.partition(":")
    return (name, secret) if sep and name and secret else None


def key(system: str, permission: str) -> Callable:
    """A FastAPI dependency: the request's key (a `catalog.Token`), for `system`'s routes, with
    `permission`; else that system's refusal."""
    (no_key, no_key_text), (denied, denied_text) = _REFUSALS.get(system, _REFUSALS["listmonk"])

    async def dependency(request: Request) -> catalog.Token:
        given = credentials(request.headers.get("authorization", ""), _SCHEMES[system])
        if given is None and system == "page":  # the page's sign-in keeps the key in a cookie
            given = credentials(request.cookies.get(COOKIE, ""), ("token",))
        token = await run_in_threadpool(catalog.authenticate, given[1], given[0]) if given else None
        if token is None:
            raise ApiError(no_key, no_key_text, code="unauthorized")
        if permission not in token.permissions:
            raise ApiError(denied, denied_text.format(permission=permission), code="forbidden")
        return token

    return dependency
