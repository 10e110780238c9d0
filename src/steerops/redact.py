"""What a message, a log line or a file may show of a URL: never its user or password, and
for a server, not its query either (`?api-key=...`, `?password=...` hold secrets)."""

import re

# `scheme://user:password@` (or `scheme://token@`): a password may hold an unencoded `/`,
# which SQLAlchemy accepts, but a user part never does, so a path holding `@`
# (`sqlite:////runs/a@2/x.db`) is kept. The password ends at the last `@` before a query
# (whose values may hold `@`). Where `x:y` comes first and every `@` after a `?` or `#`,
# the text cannot tell a password holding `?` (`u:pa?ss@host`) from a port and a query
# holding `@` (`host:8443/v1?key=a@b`): all of it after the scheme is hidden (`ambiguous`)
_CREDENTIALS = re.compile(
    r"([A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?:[^/\s@:]*:[^\s?#]*@|[^/\s@:]+@|(?P<ambiguous>[^/\s@:]*:[^\s@?#]*[?#]\S*@\S*))"
)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# local files, whose `?` or `#` may be part of a file name, not a query
_PATHS = ("sqlite", "file", "journal")


def without_credentials(text: str) -> str:
    """`text` with the user and password of every URL in it left out."""
    return _CREDENTIALS.sub(lambda m: m.group(1) + ("***" if m["ambiguous"] else ""), text)


def shown_url(url: str, paths: bool = True) -> str:
    """`url` without user, password, query or fragment, as an error line may show it and a
    record may keep it. With `paths`, a local store's URL (sqlite, file, journal, or no
    scheme: a folder) keeps its `?` and `#`; without (an endpoint, never a file), any URL
    loses them."""
    bare = without_credentials(url)
    scheme = _SCHEME.match(bare)
    local = scheme is None or scheme.group(1).split("+", 1)[0].lower() in _PATHS
    if paths and local:
        return bare
    return re.split(r"[?#]", bare, maxsplit=1)[0]


def redacted(text: str) -> str:
    """`text` (a command line) with every URL in it as `shown_url` shows it."""
    return _URL.sub(lambda found: shown_url(found.group(0)), text)
