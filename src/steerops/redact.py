"""What a message, a log line or a file may show of a URL: never its user or password, and
for a server, not its query either (`?api-key=...`, `?password=...` hold secrets)."""

import re

# `scheme://user:password@` (or `scheme://token@`): a password may hold an unencoded `/`,
# which SQLAlchemy accepts, but a user part never does, so a path holding `@`
# (`sqlite:////runs/a@2/x.db`) is kept
_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(?:[^/\s@:]*:\S*|[^/\s@:]+)@")
# a path, whose `?` or `#` may be part of a file name, not a query
_PATHS = ("sqlite", "file")


def without_credentials(text: str) -> str:
    """`text` with the user and password of every URL in it left out."""
    return _CREDENTIALS.sub(r"\1", text)


def shown_url(url: str) -> str:
    """`url` without user, password, query or fragment (a local path keeps its `?` and
    `#`), as an error line may show it and a record may keep it."""
    bare = without_credentials(url)
    scheme = bare.split("://", 1)[0].split("+", 1)[0].lower() if "://" in bare else "file"
    if scheme in _PATHS:
        return bare
    return re.split(r"[?#]", bare, maxsplit=1)[0]
