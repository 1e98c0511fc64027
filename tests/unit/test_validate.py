"""First-layer validation: what is refused before anything connects."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driver import validate
from driver.validate import InputError

SERVICES = ["indexer", "api", "crank", "postgres"]


@pytest.mark.parametrize("name", ["api", "a", "indexer-2", "x" * 63])
def test_valid_labels_pass(name):
    assert validate.dns_label(name, "service") == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "is empty"),
        ("API", "DNS-1123"),
        ("-api", "DNS-1123"),
        ("api-", "DNS-1123"),
        ("api_v2", "DNS-1123"),
        ("api;rm -rf /", "shell metacharacters"),
        ("$(reboot)", "shell metacharacters"),
        ("api`id`", "shell metacharacters"),
        ("a" * 300, "300 characters"),
    ],
)
def test_bad_labels_are_refused_with_the_valid_choices(name, fragment):
    with pytest.raises(InputError) as caught:
        validate.dns_label(name, "service", SERVICES)
    assert fragment in str(caught.value)
    assert "indexer, api, crank, postgres" in str(caught.value)


def test_unknown_service_names_the_choices():
    with pytest.raises(InputError, match="unknown service 'web'; valid: indexer, api"):
        validate.dns_label("web", "service", SERVICES)


@given(st.text(max_size=80))
def test_anything_accepted_is_a_safe_label(text):
    try:
        validate.dns_label(text, "service")
    except InputError:
        return
    assert validate.DNS1123_LABEL.match(text) and len(text) <= 63
    assert not validate.SHELL_META.search(text)


@pytest.mark.parametrize("incident", ["INC-20261122-0931", "inc.1", "A_b-3"])
def test_incident_ids(incident):
    assert validate.incident_id(incident) == incident


@pytest.mark.parametrize("incident", ["", "../etc", "INC 1", "INC;1", "x" * 64, "-INC"])
def test_bad_incident_ids(incident):
    with pytest.raises(InputError):
        validate.incident_id(incident)


def test_free_text_bounds():
    assert validate.free_text("api 500s since 09:31", "--reason")
    with pytest.raises(InputError):
        validate.free_text("x" * 501, "--reason")
    with pytest.raises(InputError):
        validate.free_text("line\x1b[2J", "--reason")
