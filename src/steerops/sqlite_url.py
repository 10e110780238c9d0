"""The one reading of a sqlite URL (an MLflow store's or an Optuna study's): its file."""

from __future__ import annotations

from pathlib import Path


def sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:` (or `sqlite+DRIVER:`) URL, sqlite's URI mode (`sqlite:///file:PATH?uri=true`)
    included; None for another scheme, in memory, or a URL sqlalchemy cannot parse (which
    opening it reports)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() != "sqlite":  # a driver named too: sqlite+pysqlite://
        return None
    database = parsed.database
    if database and parsed.query.get("uri") == "true":
        database = database.removeprefix("file:") or None
    return Path(database) if database and database != ":memory:" else None
