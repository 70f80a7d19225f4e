"""Who may drive the API from a browser: the decision, row by row (core/browserguard.py)."""

from __future__ import annotations

import pytest

from tether.core.browserguard import BrowserPolicy, decide_browser, host_name_problem, normalise_origin, origin_problem

POLICY = BrowserPolicy.build(["Node1", "tether.example.com."], ["https://UI.example.com:443/"])


@pytest.mark.parametrize("host, origin", [
    (None, None),                                    # HTTP/1.0, no Host: not a browser
    ("127.0.0.1:8500", None),                        # the CLI, py-consul, httpx: the address they dialled
    ("[::1]:8500", None),
    ("10.0.0.7", None),                              # any IP literal: rebinding needs a name
    ("localhost:8500", None),
    ("LOCALHOST.:8500", None),
    ("node1:8500", None),                            # the node name, any case
    ("tether.example.com", None),                    # http_config.allowed_hosts
    ("127.0.0.1:8500", "http://127.0.0.1:8500"),     # the API's own origin
    ("localhost:80", "http://localhost"),            # ... with its scheme's default port
    ("[::1]:8500", "http://[::1]:8500"),
    ("tether.example.com", "https://tether.example.com"),  # a TLS proxy in front: same host and port
    ("127.0.0.1:8500", "https://ui.example.com"),    # http_config.allowed_origins, normalised
])
def test_allowed(host, origin):
    assert decide_browser(POLICY, host, origin) is None


@pytest.mark.parametrize("host, origin, words", [
    ("evil.example:8500", None, "DNS rebinding"),                      # a rebinding page's Host
    ("evil.example:8500", "http://evil.example:8500", "DNS rebinding"),  # same-origin for the browser
    ("node1.evil.example", None, "http_config.allowed_hosts"),
    ("127.0.0.1:8500", "http://evil.example", "http_config.allowed_origins"),
    ("127.0.0.1:8500", "http://127.0.0.1:8501", "not this API's own"),  # another port is another origin
    ("127.0.0.1:8500", "null", "not this API's own"),                   # sandboxed iframe, file://
    (None, "http://127.0.0.1:8500", "not this API's own"),              # nothing to be the same as
    ("127.0.0.1:port", None, "malformed"),
    ("[::1", None, "malformed"),
])
def test_refused(host, origin, words):
    assert words in decide_browser(POLICY, host, origin)


@pytest.mark.parametrize("origin, normal", [
    ("HTTP://Example.COM", "http://example.com"),
    ("https://example.com:443", "https://example.com"),
    ("http://example.com:8080/", "http://example.com:8080"),
    ("http://[::1]:80", "http://[::1]"),
    ("null", None), ("file:///etc", None), ("http://example.com/path", None), ("http://u@example.com", None),
    ("http://example.com:99999", None),
])
def test_normalise_origin(origin, normal):
    assert normalise_origin(origin) == normal


def test_config_values_that_can_never_match_are_named():
    assert origin_problem("https://ui.example.com") is None
    assert "scheme://host[:port]" in origin_problem("ui.example.com")
    assert host_name_problem("tether.example.com") is None
    assert "the name alone" in host_name_problem("tether.example.com:8500")
    assert "the name alone" in host_name_problem("http://tether.example.com")
