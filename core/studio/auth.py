"""Users, password hashing and CSRF tokens.

Passwords are hashed with Argon2id (``argon2-cffi``, the reference implementation's bindings, with
its recommended parameters); the login session is a signed cookie (Starlette's ``SessionMiddleware``,
signed with ``itsdangerous``) holding the user id and a per-session CSRF token that every form
posts back.
"""
from __future__ import annotations

import functools
import hmac
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from alignkit.errors import UserError
from alignkit.studio.db import ROLES, User, user_by_name

_HASHER = PasswordHasher()
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_PASSWORD = 8


@functools.cache
def _dummy_hash() -> str:
    """A fixed hash to verify against when the user does not exist, so a wrong name takes as long as a wrong
    password (made on first use, not at import)."""
    return _HASHER.hash("not-a-password")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def authenticate(db: Session, name: str, password: str) -> User | None:
    user = user_by_name(db, name)
    if user is None:
        verify_password(_dummy_hash(), password)
        return None
    return user if verify_password(user.password_hash, password) else None


def create_user(db: Session, name: str, password: str, role: str = "annotator") -> User:
    """A new user (committed); a bad name, short password, unknown role or taken name is a UserError."""
    if not _NAME.match(name or ""):
        raise UserError(f"user name {name!r} is not allowed", "use 1-64 letters, digits, '_', '.' or '-'")
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}", f"choose one of: {', '.join(ROLES)}")
    if len(password or "") < MIN_PASSWORD:
        raise UserError(f"the password of {name!r} is too short", f"use at least {MIN_PASSWORD} characters")
    if user_by_name(db, name) is not None:
        raise UserError(f"user {name!r} already exists", "pick another name")
    user = User(name=name, password_hash=hash_password(password), role=role)
    db.add(user)
    db.commit()
    return user


def csrf_token(session: dict) -> str:
    """The session's CSRF token (made on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def csrf_ok(session: dict, token: str | None) -> bool:
    expected = session.get("csrf")
    return bool(expected and token and hmac.compare_digest(expected, token))
