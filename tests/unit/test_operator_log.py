"""The shared operator-log check: what fails an e2e test's operator, and what is allowed."""

from __future__ import annotations

import pytest

from tests.fixtures import operator_log

CLEAN = """\
2026-11-30 08:00:00,001 INFO kopf.objects: Handler 'on_change' succeeded.
2026-11-30 08:00:03,002 INFO kopf.objects: Timer 'resync' succeeded.
"""
TRACEBACK = """\
2026-11-30 08:00:00,001 ERROR kopf.objects: Handler 'on_change' failed with an exception.
Traceback (most recent call last):
  File "handlers.py", line 1, in on_change
KeyError: 'spec'
2026-11-30 08:00:03,002 INFO kopf.objects: Timer 'resync' succeeded.
"""
BARE_TRACEBACK = "Traceback (most recent call last):\n  File \"x\", line 1\nValueError\n"
TERMINATING = (
    "2026-11-30 08:00:00,001 ERROR kopf.objects: Failed to post an event. "
    "namespaces \"e2e-1\" is forbidden: unable to create new content in namespace e2e-1 "
    "because it is being terminated (NamespaceTerminating)\n"
)


def test_a_clean_log_passes() -> None:
    operator_log.assert_clean(CLEAN)


FAILED_HANDLER = CLEAN.replace("succeeded.", "failed temporarily.")


@pytest.mark.parametrize("text", [TRACEBACK, BARE_TRACEBACK, FAILED_HANDLER])
def test_a_traceback_or_a_failed_handler_fails_whatever_else_the_log_says(text: str) -> None:
    with pytest.raises(AssertionError, match="operator log"):
        operator_log.assert_clean(text)


def test_the_record_is_the_logging_line_with_its_traceback() -> None:
    (record,) = operator_log.problems(TRACEBACK)
    assert record.startswith("2026-11-30 08:00:00,001 ERROR")
    assert record.endswith("KeyError: 'spec'")


def test_an_allowed_record_passes_and_every_allowance_says_why() -> None:
    operator_log.assert_clean(TERMINATING)
    assert operator_log.problems(TERMINATING, allowed=())
    assert all(len(entry.reason.split()) >= 5 for entry in operator_log.ALLOWED)


def test_a_child_event_racing_its_owners_deletion_is_allowed_only_as_such() -> None:
    raced = (
        "2026-11-30 08:07:18,881 ERROR kopf.objects: Handler 'on_child_event' failed with an "
        "exception and will ignore it: (404)\nReason: Not Found\n"
        'HTTP response body: {"message":"djangoservices.djangoscale.io \\"shop\\" not found"}\n'
        "Traceback (most recent call last):\nApiException: (404)\n"
    )
    operator_log.assert_clean(raced)
    assert operator_log.problems(raced.replace("(404)", "(500)"))
