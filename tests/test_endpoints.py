"""Checker URLs: schemes, default ports, identity."""

import pytest

from backend.endpoints import parse
from backend.errors import CheckErrorCode, CheckFailed


@pytest.mark.parametrize(
    ("url", "server_name", "shown", "identity", "starttls"),
    [
        ("shop.example", None, "https://shop.example", "https://shop.example:443#", None),
        ("Shop.Example:443", None, "https://shop.example", "https://shop.example:443#", None),
        ("HTTPS://SHOP.EXAMPLE./cart?x=1", None, "https://shop.example/cart", "https://shop.example:443#", None),
        ("shop.example:8443", None, "https://shop.example:8443", "https://shop.example:8443#", None),
        ("ldaps://dir.test", None, "ldaps://dir.test", "ldaps://dir.test:636#", None),
        ("smtps://mail.test", None, "smtps://mail.test", "smtps://mail.test:465#", None),
        ("imaps://mail.test", None, "imaps://mail.test", "imaps://mail.test:993#", None),
        ("pop3s://mail.test", None, "pop3s://mail.test", "pop3s://mail.test:995#", None),
        ("ftps://files.test", None, "ftps://files.test", "ftps://files.test:990#", None),
        ("smtp://mail.test:587", None, "smtp://mail.test:587", "smtp://mail.test:587#", "smtp"),
        ("imap://mail.test", None, "imap://mail.test", "imap://mail.test:143#", "imap"),
        ("pop3://mail.test", None, "pop3://mail.test", "pop3://mail.test:110#", "pop3"),
        ("ldap://dir.test", None, "ldap://dir.test", "ldap://dir.test:389#", "ldap"),
        ("postgresql://db.test/app", None, "postgres://db.test/app", "postgres://db.test:5432#", "postgres"),
        ("[2001:db8::1]:8443", None, "https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443#", None),
        ("2001:db8::1", None, "https://[2001:db8::1]", "https://[2001:db8::1]:443#", None),
        ("https://10.0.0.5", "Api.Example", "https://10.0.0.5", "https://10.0.0.5:443#api.example", None),
        ("https://shop.example", "SHOP.example", "https://shop.example", "https://shop.example:443#", None),
        ("https://bücher.example", None, "https://xn--bcher-kva.example", "https://xn--bcher-kva.example:443#", None),
    ],
)
def test_urls(url, server_name, shown, identity, starttls):
    endpoint = parse(url, server_name)
    assert endpoint.url == shown
    assert endpoint.identity == identity
    assert endpoint.starttls == starttls


def test_the_name_checked_and_sent():
    assert parse("https://10.0.0.5").tls_name is None
    assert parse("https://10.0.0.5").check_name == "10.0.0.5"
    assert parse("https://10.0.0.5", "api.example").tls_name == "api.example"
    assert parse("https://lb.example", "api.example").check_name == "api.example"


@pytest.mark.parametrize(
    ("url", "server_name", "message"),
    [
        ("", None, "empty"),
        ("ftp://files.test", None, "Unsupported scheme"),
        ("http://shop.test", None, "Unsupported scheme"),
        ("https://user:secret@shop.test", None, "credentials"),
        ("https://shop.test:0", None, "between 1 and 65535"),
        ("https://shop.test:99999", None, "Not a valid URL"),
        ("https://shop test", None, "spaces"),
        ("https://", None, "no host"),
        ("https://shop.test", "10.0.0.1", "serverName must be a host name"),
        ("https://exa$mple.test", None, "not a host name"),
        ("https://" + "a" * 3000, None, "longer than"),
    ],
)
def test_invalid_urls(url, server_name, message):
    with pytest.raises(CheckFailed, match=message) as caught:
        parse(url, server_name)
    assert caught.value.check_code is CheckErrorCode.INVALID_URL
