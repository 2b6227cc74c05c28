"""Who may read and act in the console: tokens, the login cookie, the CSRF token. Pure.

A principal is found by its token (``Authorization: Bearer`` for scripts) or by the cookie the
login form sets (for people). The cookie is ``name.expiry.mac``, the MAC keyed by that
person's own token: it outlives a restart of the server, and changing a token in the config
ends every session made with the old one. A form's CSRF token is a MAC of the cookie under
a key of its own: a page served to that session carries it, a forged cross-site form cannot
know it. Tokens are compared in constant time; no token ever reaches a page or a message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import Literal

from scbundle.core.config import WebSettings, check_web_token
from scbundle.core.errors import ConfigError

Role = Literal["reader", "operator"]
ENV_TOKEN = "SCBUNDLE_WEB_TOKEN"
DEFAULT_NAME = "operator"  # who the `[web] token` (or $SCBUNDLE_WEB_TOKEN) is
COOKIE = "scbundle_session"
SESSION_S = 12 * 3600  # a login lasts as long as the site's link


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True)
class Keyring:
    """The tokens the console accepts, by name."""

    tokens: dict[str, tuple[str, Role]]

    @classmethod
    def from_settings(cls, web: WebSettings, env: dict[str, str] | None = None) -> Keyring:
        env = os.environ if env is None else env  # type: ignore[assignment]
        tokens: dict[str, tuple[str, Role]] = {n: (u.token, u.role) for n, u in web.users.items()}
        main = env.get(ENV_TOKEN) or web.token
        if main:
            try:
                check_web_token(main)
            except ValueError as err:
                raise ConfigError(f"${ENV_TOKEN}: {err}") from None
            if DEFAULT_NAME in tokens:
                raise ConfigError(f"[web.users.{DEFAULT_NAME}]: the name is the [web] token's; choose another")
            tokens[DEFAULT_NAME] = (main, "operator")
        if not tokens:
            raise ConfigError(f"scbundle web needs a token: set [web] token in the config or ${ENV_TOKEN} "
                              "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe())')")  # fmt: skip
        if len({t for t, _ in tokens.values()}) != len(tokens):
            raise ConfigError(f"${ENV_TOKEN} is also a [web.users] token: each needs its own")
        return cls(tokens)

    def by_token(self, token: str) -> Principal | None:
        found = None
        given = token.encode()
        for name, (secret, role) in self.tokens.items():  # every one compared: no early exit to time
            if hmac.compare_digest(secret.encode(), given):
                found = Principal(name, role)
        return found

    def _mac(self, name: str, text: str, purpose: str) -> str | None:
        entry = self.tokens.get(name)
        if entry is None:
            return None
        key = hashlib.sha256(f"scbundle-web {purpose}\0".encode() + entry[0].encode()).digest()
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    def cookie_for(self, p: Principal, now: float | None = None) -> str:
        body = f"{p.name}.{int((now or time.time()) + SESSION_S)}"
        return f"{body}.{self._mac(p.name, body, 'cookie')}"

    def by_cookie(self, value: str, now: float | None = None) -> Principal | None:
        parts = value.rsplit(".", 2)
        if len(parts) != 3:
            return None
        name, exp, mac = parts
        want = self._mac(name, f"{name}.{exp}", "cookie")
        if want is None or not hmac.compare_digest(want, mac) or not exp.isdigit() or int(exp) < (now or time.time()):
            return None
        return Principal(name, self.tokens[name][1])

    def csrf_for(self, cookie: str) -> str:
        name = cookie.rsplit(".", 2)[0]
        return self._mac(name, cookie, "csrf") or ""

    def csrf_ok(self, cookie: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf_for(cookie), given or "")
