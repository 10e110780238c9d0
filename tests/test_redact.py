import pytest

from steerops.redact import redacted, shown_url, without_credentials


@pytest.mark.parametrize(
    "url, shown",
    [
        ("sqlite:////abs/mlflow.db", "sqlite:////abs/mlflow.db"),
        ("sqlite:///rel/mlflow.db", "sqlite:///rel/mlflow.db"),
        ("sqlite:////runs/a@2/my?db#1.db", "sqlite:////runs/a@2/my?db#1.db"),  # a file name
        ("file:///runs/x#1", "file:///runs/x#1"),
        ("http://host:5000", "http://host:5000"),
        ("http://user:pw@host:5000/x", "http://host:5000/x"),
        ("https://tok@host/v1", "https://host/v1"),
        ("postgresql://u:secret@db/mlflow", "postgresql://db/mlflow"),
        # a password with an unencoded `/` (SQLAlchemy takes it): urlparse reads its tail as
        # the path and would have shown it
        ("postgresql://u:se/cret@db/mlflow", "postgresql://db/mlflow"),
        ("mysql+pymysql://u:pw@h:3306/db?password=secret", "mysql+pymysql://h:3306/db"),
        ("https://host/v1?api-key=secret#frag", "https://host/v1"),
        # a query value holding `@` leaves the host shown
        ("http://user:pw@host:5000/v1?to=a@b", "http://host:5000/v1"),
        ("https://tok@host/v1?to=a@b", "https://host/v1"),
        # `x:y` then `@` only past a `?`: a password holding `?`, or a port and a query
        # holding `@`; neither the password nor the query is shown, nor the host
        ("postgresql://u:pa?ss@db/mlflow", "postgresql://***"),
        ("postgresql://u:pa?ss@db/mlflow?to=a@b", "postgresql://***"),
        ("https://judge.example:8443/v1?api-key=ab@SECRET", "https://***"),
        ("postgresql://db.example:5432/x?password=p@SECRET", "postgresql://***"),
        ("https://host/v1?to=a@b", "https://host/v1"),  # no `x:y`: no credentials
        ("HTTPS://host/v1#secret", "HTTPS://host/v1"),
    ],
)
def test_a_url_is_shown_without_what_may_hold_a_secret(url, shown):
    assert shown_url(url) == shown


def test_credentials_leave_every_url_of_a_text_and_nothing_else():
    text = "--storage postgresql://u:p/w@h/db --trait a@b x https://tok@h:1/v1?q=a@b"
    assert (
        without_credentials(text)
        == "--storage postgresql://h/db --trait a@b x https://h:1/v1?q=a@b"
    )


@pytest.mark.parametrize(
    "url",
    [
        "api.example.com/v1?api-key=SECRET",  # no scheme
        "localhost:8000/v1?api-key=SECRET",
        "file:x?api-key=SECRET",
        "sqlite:///x.db?api-key=SECRET",
        "https://host/v1#SECRET",
    ],
)
def test_an_endpoint_never_shows_a_query_whatever_its_form(url):
    assert "SECRET" not in shown_url(url, paths=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://judge.example:8443/v1?api-key=ab@SECRET",
        "postgresql://db.example:5432/x?password=p@SECRET#frag",
        "postgresql://u:SECRET?x@db/mlflow",
    ],
)
def test_a_query_holding_at_after_a_port_shows_no_secret_anywhere(url):
    assert "SECRET" not in without_credentials(url)
    assert "SECRET" not in redacted(f"--storage {url} --trait x")


def test_a_command_line_shows_no_credentials_nor_a_servers_query():
    text = "--storage=postgresql://u@h/db?password=SECRET"
    assert redacted(text) == "--storage=postgresql://h/db"
    assert (
        redacted("--storage sqlite:////runs/a@2/x?y.db") == "--storage sqlite:////runs/a@2/x?y.db"
    )
