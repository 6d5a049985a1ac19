"""SQLAlchemy models of the results database.

Nothing here is ever overwritten in place: a pass is a run with one result per
question; a rescore is a new run (kind ``rescore``) whose scores point at the
parent's results. Timestamps are stored as naive UTC and read back as aware UTC,
so SQLite and Postgres mean the same instant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_KINDS = ("scheduled", "manual", "rescore")
RUN_STATUSES = ("running", "completed", "failed", "aborted", "abandoned")
RESULT_STATUSES = ("completed", "failed")
METRICS = ("grounding", "coverage", "citations")


# JSON columns store Python None as SQL NULL, not as the JSON text 'null', so
# `IS NULL` finds every empty value whether the attribute was set to None or not.
JSON_VALUE = JSON(none_as_null=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and returned as an aware UTC datetime."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON_VALUE,
    }


class Run(Base):
    """One pass of the monitor, or one re-grading of a stored pass."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    parent_run_id: Mapped[str | None] = mapped_column(
        ForeignKey("runs.id", ondelete="RESTRICT")
    )
    owner: Mapped[str | None] = mapped_column(String(200))

    # What produced the reports.
    prompt_version: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    model_reported: Mapped[str | None] = mapped_column(String(400))
    git_sha: Mapped[str] = mapped_column(String(64))
    git_dirty: Mapped[bool] = mapped_column(Boolean, default=False)
    golden_hash: Mapped[str] = mapped_column(String(64))
    corpus_fingerprint: Mapped[str] = mapped_column(String(200))
    sources_backend: Mapped[str] = mapped_column(String(32), default="local")

    # What graded them.
    judge_model: Mapped[str] = mapped_column(String(200))
    judge_version: Mapped[str] = mapped_column(String(64))
    threshold: Mapped[float] = mapped_column(Float)

    # Aggregates, written when the run ends. score is None when nothing was scored.
    score: Mapped[float | None] = mapped_column(Float)
    metric_means: Mapped[dict[str, Any] | None] = mapped_column(JSON_VALUE)
    questions_total: Mapped[int] = mapped_column(Integer, default=0)
    questions_failed: Mapped[int] = mapped_column(Integer, default=0)
    questions_unscored: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[float | None] = mapped_column(Float)
    wall_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)

    results: Mapped[list[Result]] = relationship(
        back_populates="run", order_by="Result.id"
    )

    __table_args__ = (
        Index("ix_runs_started_at", "started_at"),
        Index("ix_runs_status_started_at", "status", "started_at"),
        Index("ix_runs_prompt_version_started_at", "prompt_version", "started_at"),
        Index("ix_runs_model_started_at", "model", "started_at"),
        Index("ix_runs_git_sha_started_at", "git_sha", "started_at"),
        Index("ix_runs_parent_run_id", "parent_run_id"),
    )


class Result(Base):
    """One question of one pass: the report and what the agent did for it."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    question_id: Mapped[str] = mapped_column(String(64))
    question: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    report: Mapped[str | None] = mapped_column(Text)
    sources: Mapped[list[Any] | None] = mapped_column(JSON_VALUE)
    checks: Mapped[dict[str, Any] | None] = mapped_column(JSON_VALUE)
    node_visits: Mapped[list[Any] | None] = mapped_column(JSON_VALUE)
    worker_turns: Mapped[int | None] = mapped_column(Integer)
    trace_id: Mapped[str | None] = mapped_column(String(64))
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[datetime]

    run: Mapped[Run] = relationship(back_populates="results")

    __table_args__ = (UniqueConstraint("run_id", "question_id"),)


class Score(Base):
    """One metric of one graded result, in one grading (a run or its rescore).

    ``value`` is ``None`` when the judge could not score it; ``error`` says why.
    An unscored metric is left out of every mean, never counted as zero.
    """

    __tablename__ = "scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[float | None] = mapped_column(Float)
    rationale: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    judge_model: Mapped[str] = mapped_column(String(200))
    judge_version: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("run_id", "result_id", "metric", "attempt"),
        Index("ix_scores_result_id", "result_id"),
    )


class Usage(Base):
    """Model usage of one node for one result, summed over its calls.

    Token counts are ``None`` when no call of that node reported usage;
    ``calls_without_usage`` says how many calls did not.
    """

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"))
    node: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    calls: Mapped[int] = mapped_column(Integer)
    calls_without_usage: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    cost: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_usage_result_id", "result_id"),)


class Alert(Base):
    """An alert condition, stored before any notice about it is sent."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(32))
    fingerprint: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON_VALUE)
    run_id: Mapped[str | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    last_notified_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_alerts_state_fingerprint", "state", "fingerprint"),
        Index("ix_alerts_created_at", "created_at"),
        Index("ix_alerts_run_id", "run_id"),
    )


class Notification(Base):
    """One notice (fired, reminder, resolved, test) to deliver to one sink."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int | None] = mapped_column(
        ForeignKey("alerts.id", ondelete="CASCADE")
    )
    sink: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON_VALUE)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_notifications_state", "state"),
        Index("ix_notifications_alert_id", "alert_id"),
    )


class PageText(Base):
    """The text of a page as a run read it, stored once per content hash.

    A rescore grades against exactly the text the agent read, even after the
    corpus or the web page has changed.
    """

    __tablename__ = "pages"

    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime]


class Worker(Base):
    """A daemon process: its heartbeat, its schedule and what it has done."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    interval_seconds: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    next_due_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    passes: Mapped[int] = mapped_column(Integer, default=0)
    skipped_ticks: Mapped[int] = mapped_column(Integer, default=0)
    last_run_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (Index("ix_workers_heartbeat_at", "heartbeat_at"),)


class Lease(Base):
    """Who may run a pass now. A holder that stops renewing loses it at expiry."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120))
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class Baseline(Base):
    """A pinned baseline for the regression rule: these runs stand for a version."""

    __tablename__ = "baselines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_key: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(200))
    run_ids: Mapped[list[Any]] = mapped_column(JSON_VALUE)
    created_at: Mapped[datetime]
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    __table_args__ = (
        Index("ix_baselines_version_key_active", "version_key", "active"),
    )


class Snapshot(Base):
    """A frozen set of source pages, to replay a pass against unchanged pages."""

    __tablename__ = "snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(Text)


class SnapshotPage(Base):
    """One URL of a snapshot: its text (in ``pages``) or why it was skipped."""

    __tablename__ = "snapshot_pages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("snapshots.id", ondelete="CASCADE")
    )
    url: Mapped[str] = mapped_column(Text)
    final_url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    http_status: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(200))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    boilerplate_share: Mapped[float | None] = mapped_column(Float)
    fetched_at: Mapped[datetime]

    __table_args__ = (Index("ix_snapshot_pages_snapshot_id", "snapshot_id"),)
