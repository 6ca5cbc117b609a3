"""The lifecycle every SQLAlchemy store shares: no I/O in the constructor, connect and create in start()."""

from __future__ import annotations

from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import Engine


class SqlStore:
    """Base of the agent's small stores (SQLite by default, PostgreSQL when shared)."""

    metadata: MetaData

    def __init__(self, url: str):
        self._url = url
        self._engine: Engine | None = None

    def start(self) -> None:
        self._engine = create_engine(self._url, future=True)
        self.metadata.create_all(self._engine)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError(f"{type(self).__name__}.start() was not called")
        return self._engine
