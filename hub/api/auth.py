"""Who is calling: bearer tokens for programs, session cookies with a CSRF token for the browser.

1. Every endpoint but the login ones needs credentials: ``Authorization: Bearer <token>`` or the
   ``orderhub_session`` cookie. Without valid ones the answer is 401 and no order data.
2. Tokens are JWTs (PyJWT, HS256) signed with the API's secret (``ORDERHUB_API_SECRET``, else a
   random key kept in ``<state_dir>/api/secret``), short-lived (``ORDERHUB_API_TOKEN_TTL_S``; a
   browser session lasts ``ORDERHUB_API_SESSION_TTL_S``, a shift). They
   name the user only: the user's roles and whether the account is enabled are read at every
   request, so a disabled user or a role taken away counts at once, not when the token expires.
3. A session (``POST /api/v1/auth/session``) is the same token in an HttpOnly, SameSite=Strict
   cookie, with a CSRF token of its own in the token's claims and in a cookie the page's script
   reads (``orderhub_csrf``). A request that changes something with the session cookie must send
   that CSRF token in ``X-CSRF-Token``; without it, or with another, 403 (double submit, and the
   token is bound to the session). Bearer tokens need none: a browser never sends them by itself.
4. Login attempts are rate-limited (``limits``, moving windows): 5 failed attempts a minute per
   user name, 60 attempts a minute per client address. Beyond either, 429 with ``Retry-After``,
   whether the password is right or not.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hub.api.users import User, Users

SESSION_COOKIE = "orderhub_session"
CSRF_COOKIE = "orderhub_csrf"
CSRF_HEADER = "X-CSRF-Token"
#: Methods that change nothing: no CSRF token needed.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Clock = Callable[[], dt.datetime]


class Unauthorized(Exception):
    """401: no valid credentials (why, for the problem's detail)."""


class Forbidden(Exception):
    """403: valid credentials, but not for this."""


class TooManyAttempts(Exception):
    """429: too many login attempts; ``retry_after`` seconds until the next is counted."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many login attempts; try again in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one request."""

    user: User
    #: How they proved it: ``bearer`` or ``session``.
    via: str
    #: The session's CSRF token (sessions only).
    csrf: str | None = None

    @property
    def roles(self) -> tuple[str, ...]:
        return self.user.roles


def secret_of(configured: str | None, state_dir: Path) -> bytes:
    """The signing key: the configured one, else one made once and kept (0600) in the state folder."""
    if configured:
        return configured.encode()
    path = state_dir / "api" / "secret"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        made = path.with_suffix(".tmp")
        descriptor = os.open(made, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(48))
        made.replace(path)
    return path.read_text().strip().encode()


class Tokens:
    """Issues and checks tokens (rule 2)."""

    ALGORITHM = "HS256"

    def __init__(self, key: bytes, ttl_s: float, clock: Clock | None = None, session_ttl_s: float | None = None) -> None:
        self.key, self.ttl_s = key, ttl_s
        #: How long a browser session lasts (a shift); a bearer token lasts ``ttl_s``.
        self.session_ttl_s = session_ttl_s if session_ttl_s is not None else ttl_s
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    def issue(self, user: User, kind: str) -> tuple[str, str | None]:
        """A token for ``user`` (``bearer`` or ``session``) and, for a session, its CSRF token."""
        import jwt

        now = self.clock()
        csrf = secrets.token_urlsafe(24) if kind == "session" else None
        ttl = self.session_ttl_s if kind == "session" else self.ttl_s
        claims = {"sub": user.username, "kind": kind, "iat": now, "nbf": now,
                  "exp": now + dt.timedelta(seconds=ttl), "jti": uuid.uuid4().hex}
        if csrf:
            claims["csrf"] = csrf
        return jwt.encode(claims, self.key, algorithm=self.ALGORITHM), csrf

    def check(self, token: str, kind: str) -> dict:
        """The claims of a valid, unexpired token of this kind; Unauthorized says why not."""
        import jwt

        try:
            claims = jwt.decode(token, self.key, algorithms=[self.ALGORITHM], options={"require": ["exp", "sub"]},
                                leeway=0)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired: log in again") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("the token is not valid") from None
        if claims.get("kind") != kind:
            raise Unauthorized(f"a {claims.get('kind')} token cannot be used as a {kind} token")
        return claims


def authenticate(users: Users, tokens: Tokens, *, method: str, authorization: str | None,
                 session: str | None, csrf_header: str | None) -> Caller:
    """Rules 1-3 for one request."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("use 'Authorization: Bearer <token>'")
        claims = tokens.check(token.strip(), "bearer")
        return Caller(_enabled(users, claims["sub"]), "bearer")
    if session:
        claims = tokens.check(session, "session")
        caller = Caller(_enabled(users, claims["sub"]), "session", claims.get("csrf"))
        if method.upper() not in SAFE_METHODS:
            if not csrf_header or not caller.csrf or not hmac.compare_digest(csrf_header.encode(),
                                                                              caller.csrf.encode()):
                raise Forbidden(f"a change made with the session cookie needs its CSRF token in {CSRF_HEADER}")
        return caller
    raise Unauthorized("log in: a bearer token or the session cookie is needed")


def _enabled(users: Users, username: str) -> User:
    from hub.errors import InvalidInput

    try:
        user = users.get(username)
    except InvalidInput:
        raise Unauthorized("the token's user does not exist") from None
    if user.disabled:
        raise Unauthorized("the account is disabled")
    return user


class LoginLimiter:
    """Rule 4: at most ``per_user`` failed attempts per user name and ``per_address`` attempts of any
    outcome per client address in a moving minute; beyond either, even the right password waits."""

    def __init__(self, per_user: int = 5, per_address: int = 60) -> None:
        from limits import RateLimitItemPerMinute
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._user, self._address = RateLimitItemPerMinute(per_user), RateLimitItemPerMinute(per_address)

    def attempt(self, username: str, address: str) -> None:
        """Before checking a password: count the attempt for the address; TooManyAttempts when the
        address or the user name has used up its window."""
        if not self._limiter.test(self._user, f"user:{username}"):
            raise TooManyAttempts(self._wait(self._user, f"user:{username}"))
        if not self._limiter.hit(self._address, f"address:{address}"):
            raise TooManyAttempts(self._wait(self._address, f"address:{address}"))

    def failed(self, username: str) -> None:
        """A wrong password (or an unknown or disabled user): counted for the user name."""
        self._limiter.hit(self._user, f"user:{username}")

    def _wait(self, item: object, key: str) -> int:
        reset, _ = self._limiter.get_window_stats(item, key)
        return max(1, int(reset - dt.datetime.now(dt.timezone.utc).timestamp()) + 1)
