"""core/bexpr.py: Consul's filter grammar, as a table over one document."""

from __future__ import annotations

import pytest

from tether.core.bexpr import parse_filter
from tether.core.errors import InvalidInput

DOC = {"Service": "web", "Tags": ["v1", "blue"], "Port": 8080, "Meta": {"env": "prod", "a.b": "x"},
       "EnableTagOverride": False, "Weight": 1.5, "Address": "", "Proxy": {"Upstreams": []},
       "Node": {"Node": "n1", "Meta": {}}}


@pytest.mark.parametrize("expression, expected", [
    ("Service == web", True),
    ('Service == "web"', True),
    ("Service != web", False),
    ("Port == 8080", True),
    ("Port == 80", False),
    ("Weight == 1.5", True),
    ("EnableTagOverride == false", True),
    ("v1 in Tags", True),
    ('"green" not in Tags', True),
    ("Tags contains blue", True),
    ("Tags not contains blue", False),
    ("env in Meta", True),
    ("Meta.env == prod", True),
    ('Meta["a.b"] == x', True),
    ("Meta.absent == prod", False),
    ("Meta.absent is empty", True),
    ("Address is empty", True),
    ("Tags is not empty", True),
    ("Proxy.Upstreams is empty", True),
    ("Node.Node == n1", True),
    ("Node.Meta is empty", True),
    ("Service matches `^w.b$`", True),
    ('Tags matches "^bl"', True),
    ("Service not matches ^api", True),
    ("Service contains eb", True),
    ("Service == web and Port == 80", False),
    ("Service == api or Port == 8080", True),
    ("not Service == api", True),
    ("not (Service == web and v1 in Tags) or Meta.env == prod", True),
    ("(Service == api or Service == web) and not blue not in Tags", True),
])
def test_expressions(expression, expected):
    assert parse_filter(expression).matches(DOC) is expected


@pytest.mark.parametrize("expression, position", [
    ("Service ==", 11),
    ("Service = web", 9),
    ("(Service == web", 16),
    ("Service == web and", 19),
    ("Service == web extra", 16),
    ("== web", 1),
    ("Service is full", 12),
    ("Meta. == x", 7),
])
def test_syntax_errors_name_the_position(expression, position):
    with pytest.raises(InvalidInput, match=rf"position {position}\b"):
        parse_filter(expression)


def test_an_unknown_field_is_an_error_not_an_empty_answer():
    with pytest.raises(InvalidInput, match="'Servcie' is not a field"):
        parse_filter("Servcie == web").matches(DOC)
    with pytest.raises(InvalidInput, match="bad regular expression"):
        parse_filter("Service matches `(`")
