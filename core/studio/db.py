"""The studio's database: SQLAlchemy 2 ORM models over SQLite (WAL) or PostgreSQL.

Every write is one transaction committed before the response is sent, so a label the browser saw
accepted survives a killed server. SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on
disk when it returns) and a busy timeout, so concurrent writers queue instead of failing.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from sqlalchemy import (JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine,
                        event, select)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

ROLES = ("admin", "annotator")
MODES = ("pairwise", "rating", "ranking")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="annotator")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Project(Base):
    """An annotation project (or, with ``eval_run`` set, a blind evaluation of a run)."""
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    mode: Mapped[str] = mapped_column(String(16))  #: pairwise | rating | ranking
    guideline: Mapped[str] = mapped_column(Text, default="")
    guideline_version: Mapped[int] = mapped_column(Integer, default=1)
    overlap: Mapped[int] = mapped_column(Integer, default=1)  #: annotators per item
    sources: Mapped[list] = mapped_column(JSON, default=list)  #: the response sources, as given
    eval_run: Mapped[str | None] = mapped_column(Text, nullable=True)  #: run folder of a blind evaluation
    eval_other: Mapped[str | None] = mapped_column(Text, nullable=True)  #: run B of an A-vs-B evaluation
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    items: Mapped[list["Item"]] = relationship(back_populates="project", order_by="Item.id")


class Item(Base):
    """One prompt with its responses (``responses[i]`` came from ``response_sources[i]``)."""
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    prompt: Mapped[dict | list | str] = mapped_column(JSON)
    responses: Mapped[list] = mapped_column(JSON)
    response_sources: Mapped[list] = mapped_column(JSON)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)  #: e.g. {"sample": i} of a run's eval.json
    project: Mapped[Project] = relationship(back_populates="items")


class Assignment(Base):
    """An item given to one annotator, with the order its responses are shown in."""
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("item_id", "user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    order: Mapped[list] = mapped_column(JSON)  #: response indices in the order shown
    item: Mapped[Item] = relationship()


class Label(Base):
    """An annotator's answer to one assignment (at most one: the unique key makes a resubmission a no-op)."""
    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("assignment_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    #: pairwise: {"choice": <response index> | "tie" | "both_bad"}; rating: {"ratings": ["A".."D" per response]};
    #: ranking: {"ranking": [response indices, best first]}
    value: Mapped[dict] = mapped_column(JSON)
    feedback: Mapped[str] = mapped_column(Text, default="")
    order_shown: Mapped[list] = mapped_column(JSON)
    guideline_version: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seconds: Mapped[float | None] = mapped_column(nullable=True)  #: time from showing the item to the answer
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    assignment: Mapped[Assignment] = relationship()
    user: Mapped[User] = relationship()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``), tables created."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # password hashes: owner only
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               json_serializer=lambda o: json.dumps(o, ensure_ascii=False))
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                               json_serializer=lambda o: json.dumps(o, ensure_ascii=False))
    Base.metadata.create_all(engine)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def user_by_name(db: Session, name: str) -> User | None:
    return db.scalar(select(User).where(User.name == name))
