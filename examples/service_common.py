"""What the example services share: their settings, with embedded defaults
that need no server, the database (SQLAlchemy) and the Celery app.

The twins (``leaky_service/app.py``, ``fixed_service/app.py``) differ only
in how they use the AI client, the cache and the engine: that is the leak
and its fix. Everything else is here, once.

Settings (environment variables), each with its default:

- ``EXAMPLE_DATA_DIR``: where the defaults keep their files
  (``$TMPDIR/leakprobe-example-<uid>``);
- ``DATABASE_URL``: any SQLAlchemy URL, e.g. ``postgresql+psycopg://...``
  (``sqlite:///<data dir>/documents.db``);
- ``CELERY_BROKER_URL``: any Celery broker URL, e.g. ``redis://...``
  (``filesystem://``, its folders in ``<data dir>/broker``);
- ``UPSTREAM_URL``: the AI provider, ``examples/upstream.py``
  (``http://127.0.0.1:8081``).

The web app and the Celery worker of one service must share
``EXAMPLE_DATA_DIR`` (or the URLs): the filesystem broker is a directory
that the web app writes tasks to and the worker reads them from.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from collections.abc import Callable

from celery import Celery
from fastapi import APIRouter, HTTPException
from sqlalchemy import Engine, String, Text, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

DATA_DIR = Path(
    os.environ.get("EXAMPLE_DATA_DIR")
    or Path(tempfile.gettempdir()) / f"leakprobe-example-{os.getuid()}"
)
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'documents.db'}"
BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://"
UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8081")

# The name the web app sends the task by, and the worker runs it under.
SUMMARIZE_TASK = "documents.summarize"


class Base(DeclarativeBase):
    pass


class Document(Base):
    """A text to summarise, and its summary once the task has run."""

    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(4096))
    summary: Mapped[str | None] = mapped_column(Text, default=None)


# One engine per process, made on first use: a process forked after it was
# made (a Celery child, a gunicorn worker) must not share its connections.
_engine: Engine | None = None
_engine_pid = 0


def engine() -> Engine:
    """This process's engine (like the seed's ``get_engine()`` singleton)."""
    global _engine, _engine_pid
    if _engine is None or _engine_pid != os.getpid():
        _engine = create_engine(DATABASE_URL)
        _engine_pid = os.getpid()
    return _engine


def dispose_engine() -> None:
    """Closes this process's pooled connections (the seed's recommended
    ``worker_shutdown`` hook); the next ``engine()`` makes a new one."""
    global _engine
    if _engine is not None and _engine_pid == os.getpid():
        _engine.dispose()
    _engine = None


def init_db() -> None:
    """Creates the data directory and the table, if missing. Run once before
    the processes start (they would race to create it)."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    Base.metadata.create_all(engine())
    dispose_engine()


def add_document(text: str) -> int:
    with Session(engine()) as session, session.begin():
        document = Document(text=text)
        session.add(document)
        session.flush()
        return document.id


def document_text(document_id: int) -> str:
    with Session(engine()) as session:
        document = session.get(Document, document_id)
        if document is None:
            raise LookupError(f"no document {document_id}")
        return document.text


def document_summary(document_id: int) -> str | None:
    with Session(engine()) as session:
        document = session.get(Document, document_id)
        if document is None:
            raise LookupError(f"no document {document_id}")
        return document.summary


def save_summary(document_id: int, summary: str) -> None:
    with Session(engine()) as session, session.begin():
        session.get(Document, document_id).summary = summary


def make_celery(name: str) -> Celery:
    """The Celery app of a service: ``CELERY_BROKER_URL``, or by default
    Celery's filesystem broker in ``<data dir>/broker`` (no server). Results
    are not stored: the task writes its summary to the database."""
    app = Celery(name, broker=BROKER_URL)
    app.conf.update(
        task_ignore_result=True,
        worker_prefetch_multiplier=1,  # a recycled child takes no queue with it
        broker_connection_retry_on_startup=True,
    )
    if BROKER_URL.startswith("filesystem://"):
        queue = DATA_DIR / "broker" / "queue"
        control = DATA_DIR / "broker" / "control"
        for folder in (queue, control):
            folder.mkdir(parents=True, exist_ok=True)
        # One folder for both directions: the web app writes the messages
        # that the worker reads. Polled every 0.1 s (1 s by default).
        app.conf.broker_transport_options = {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "control_folder": str(control),
            "store_processed": False,
            "polling_interval": 0.1,
        }
    return app


def summarize_document(document_id: int, summarize: Callable[[str], str]) -> None:
    """The task's body: summarise a stored document with the twin's
    ``summarize`` and store the summary."""
    save_summary(document_id, summarize(document_text(document_id)))


def documents_router(celery: Celery) -> APIRouter:
    """The routes both twins serve alike: ``POST /documents?text=...``
    stores a document and sends the summarize task, ``GET
    /documents/{id}`` says its summary (``null`` until the task has run),
    ``GET /healthz`` is the readiness probe (touches no upstream)."""
    router = APIRouter()

    @router.post("/documents")
    def add(text: str) -> dict:
        document_id = add_document(text)
        celery.send_task(SUMMARIZE_TASK, args=[document_id])
        return {"id": document_id}

    @router.get("/documents/{document_id}")
    def get(document_id: int) -> dict:
        try:
            return {"id": document_id, "summary": document_summary(document_id)}
        except LookupError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    @router.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    return router
