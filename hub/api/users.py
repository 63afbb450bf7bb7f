"""Local users of the API: a name, a password hashed with Argon2id (argon2-cffi), roles, and
whether the account is enabled. ``orderhub users add|role|disable|enable|list``.

Users live in the hub's SQL database (the read model's URL) in a table of their own,
``api_users``, outside the read model's tables: the read model can be rebuilt from Kafka at any
time, users cannot, so a reset of the read model never touches them.

A user's roles are HUB roles (``sales``, ``planner``, ``sales_manager``, ...): each write a user
makes is a proposal by ``HUB:<role>``, checked by ownership.yaml like any connector's.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

from sqlalchemy import Boolean, Column, DateTime, MetaData, String, Table, Text, create_engine, select, update
from sqlalchemy.engine import Engine

from hub.errors import InvalidInput

metadata = MetaData()
api_users = Table(
    "api_users", metadata,
    Column("username", String(64), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("roles", Text, nullable=False),  # JSON list of role names
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
ROLE = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Shorter passwords are refused.
MIN_PASSWORD = 10


@dataclass(frozen=True)
class User:
    """An API user as the API sees it (never the hash)."""

    username: str
    roles: tuple[str, ...]
    disabled: bool = False


class Users:
    """The users table."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        from argon2 import PasswordHasher

        self.engine = create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        metadata.create_all(self.engine)  # its own table, created if missing (not a read-model migration)
        self._hasher = PasswordHasher()  # Argon2id with the library's current parameters
        #: A hash to verify against for unknown users, so a wrong name takes as long as a wrong password.
        self._decoy = self._hasher.hash("not a password of anyone")

    def close(self) -> None:
        self.engine.dispose()

    def add(self, username: str, password: str, roles: list[str]) -> User:
        """A new user; InvalidInput says what is wrong with the name, the password or a role."""
        _check_name(username)
        if len(password) < MIN_PASSWORD:
            raise InvalidInput(f"the password must have at least {MIN_PASSWORD} characters")
        roles = _check_roles(roles)
        with self.engine.begin() as conn:
            if conn.execute(select(api_users.c.username).where(api_users.c.username == username)).first():
                raise InvalidInput(f"user {username!r} exists already")
            conn.execute(api_users.insert().values(username=username, password_hash=self._hasher.hash(password),
                                                   roles=json.dumps(roles), disabled=False,
                                                   created_at=dt.datetime.now(dt.timezone.utc)))
        return User(username, tuple(roles))

    def set_roles(self, username: str, roles: list[str]) -> User:
        roles = _check_roles(roles)
        self._update(username, roles=json.dumps(roles))
        return self.get(username)

    def set_disabled(self, username: str, disabled: bool) -> User:
        self._update(username, disabled=disabled)
        return self.get(username)

    def set_password(self, username: str, password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise InvalidInput(f"the password must have at least {MIN_PASSWORD} characters")
        self._update(username, password_hash=self._hasher.hash(password))

    def get(self, username: str) -> User:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_users).where(api_users.c.username == username)).mappings().first()
        if row is None:
            raise InvalidInput(f"no user {username!r}")
        return _user(row)

    def list(self) -> list[User]:
        with self.engine.connect() as conn:
            return [_user(row) for row in conn.execute(select(api_users).order_by(api_users.c.username)).mappings()]

    def authenticate(self, username: str, password: str) -> User | None:
        """The user, when the password is theirs and the account enabled; None otherwise (the same time
        either way). A hash made with older parameters is upgraded on the way."""
        from argon2.exceptions import InvalidHashError, VerificationError

        with self.engine.connect() as conn:
            row = conn.execute(select(api_users).where(api_users.c.username == username)).mappings().first()
        stored = row["password_hash"] if row is not None else self._decoy
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row["disabled"]:
            return None
        if self._hasher.check_needs_rehash(stored):
            self._update(username, password_hash=self._hasher.hash(password))
        return _user(row)

    def _update(self, username: str, **values: object) -> None:
        with self.engine.begin() as conn:
            changed = conn.execute(update(api_users).where(api_users.c.username == username).values(**values))
        if changed.rowcount == 0:
            raise InvalidInput(f"no user {username!r}")


def _user(row: object) -> User:
    return User(row["username"], tuple(json.loads(row["roles"])), bool(row["disabled"]))  # type: ignore[index]


def _check_name(username: str) -> None:
    if not USERNAME.fullmatch(username or ""):
        raise InvalidInput(f"user name {username!r}: 2 to 64 lower-case letters, digits, '.', '_' or '-'")


def _check_roles(roles: list[str]) -> list[str]:
    if not roles:
        raise InvalidInput("give the user at least one role (e.g. sales, planner, sales_manager)")
    for role in roles:
        if not ROLE.fullmatch(role):
            raise InvalidInput(f"role {role!r}: a HUB role name such as sales or plant_manager")
    return sorted(set(roles))
