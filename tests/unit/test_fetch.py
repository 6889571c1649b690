"""Image URLs from clients: only http(s), only allowed hosts, never private addresses (no network
is needed to refuse)."""

import pytest

from assistant.fetch import FetchError, fetch_image_url, parse_hosts


@pytest.mark.parametrize(
    "url, hosts, words",
    [
        ("file:///etc/passwd", None, "only http(s) image URLs"),
        ("http://evil.example/cat.png", frozenset({"images.example.org"}), "images from evil.example are not allowed"),
        ("http://127.0.0.1/cat.png", None, "private or local address (127.0.0.1)"),
        ("http://169.254.169.254/latest/meta-data", None, "private or local address (169.254.169.254)"),
        ("http://[::1]:8080/cat.png", None, "private or local address (::1)"),
        ("http://localhost/cat.png", None, "private or local address"),
    ],
)
def test_urls_that_may_not_be_fetched_are_refused_before_any_request(url, hosts, words):
    with pytest.raises(FetchError, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        fetch_image_url(url, hosts, timeout_s=1, max_bytes=1000)


def test_the_host_list_setting():
    assert parse_hosts(None) is None and parse_hosts("") is None
    assert parse_hosts(" a.com, B.org ,") == frozenset({"a.com", "b.org"})
