"""Who may connect to `serve`: the default address, loopback, the token rule (light: the CLI imports it at start)."""

from __future__ import annotations

import ipaddress
import os

from ..errors import Opt, UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_ENV = "MIDILLM_TOKEN"
MIN_TOKEN_CHARS = 16  # a guessable token on a network is no guard
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None, *, no_auth: bool) -> str | None:
    """The token the server will require (None: none), or a UserError when a network address would be unguarded."""
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if no_auth:
        if token is not None:
            raise UserError("give a token or ", Opt("no_auth", True), ", not both")
        return None
    if token is None and not is_loopback(host):
        raise UserError(f"listening on {host} lets other machines in: give a token (", Opt("token"),
                        f" or {TOKEN_ENV}), or ", Opt("no_auth", True), " to let anyone in")  # fmt: skip
    if token is not None and (len(token) < MIN_TOKEN_CHARS or token != token.strip()):
        raise UserError(f"the token must be at least {MIN_TOKEN_CHARS} characters without surrounding spaces, e.g. "
                        "the output of: python3 -c 'import secrets; print(secrets.token_urlsafe())'")  # fmt: skip
    return token
