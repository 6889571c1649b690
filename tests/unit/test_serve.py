"""Who may reach the chat: loopback needs nothing; anything wider needs a password or --insecure."""

import pytest

from assistant.errors import SettingsError
from assistant.exposure import check_exposure, is_loopback
from assistant.settings import load_settings


def settings(**values):
    return load_settings(cli=values, env={}, config_file=None)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_password(host):
    assert is_loopback(host)
    assert check_exposure(settings(host=host)) is None


@pytest.mark.parametrize(
    "values", [{"host": "0.0.0.0"}, {"host": "192.168.1.20"}, {"host": "myserver.lan"}, {"share": True}]
)
def test_an_exposed_server_without_a_password_is_refused(values):
    with pytest.raises(
        SettingsError, match="refusing to serve the chat .* without a password: give --auth USER:PASSWORD"
    ):
        check_exposure(settings(**values))


def test_a_password_or_insecure_opens_it(caplog):
    assert check_exposure(settings(host="0.0.0.0", auth="ann:s3cret:with:colons")) == ("ann", "s3cret:with:colons")
    assert check_exposure(settings(host="0.0.0.0", insecure=True)) is None
    assert "no password (--insecure)" in caplog.text, "an open exposed server is logged as such"


def test_the_password_never_shows_in_the_settings():
    assert "s3cret" not in repr(settings(auth="ann:s3cret")) and "s3cret" not in str(settings(auth="ann:s3cret"))
