"""Warning events posted through the API layer (kopf's own need a running kopf handler)."""

from __future__ import annotations

import datetime
import logging

from djangoscale.k8s import ApiError
from djangoscale.k8s.events import MAX_MESSAGE_LENGTH, warn, warning_event
from tests.fixtures.fake_api import FakeApi

SHOP = {"apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": "web", "uid": "u-1"}}
NOW = datetime.datetime(2026, 11, 30, 9, 0, 0, tzinfo=datetime.UTC)


def test_the_event_names_the_object_it_is_about():
    event = warning_event(SHOP, "BudgetExceeded", "9 > 6", NOW)
    assert event["involvedObject"] == {"apiVersion": "djangoscale.io/v1alpha1",
                                       "kind": "DjangoService", "name": "shop",
                                       "namespace": "web", "uid": "u-1"}
    assert (event["type"], event["reason"], event["message"]) == ("Warning", "BudgetExceeded",
                                                                  "9 > 6")
    assert event["metadata"]["namespace"] == "web"
    assert event["metadata"]["name"].startswith("shop.")
    assert event["lastTimestamp"] == "2026-11-30T09:00:00Z"


def test_two_events_get_two_names():
    first, second = (warning_event(SHOP, "R", "m", NOW)["metadata"]["name"] for _ in range(2))
    assert first != second


def test_a_long_message_is_cut_not_refused():
    event = warning_event(SHOP, "MigrationFailed", "x" * 5000, NOW)
    assert len(event["message"]) == MAX_MESSAGE_LENGTH


def test_an_event_the_api_refuses_is_logged_not_raised(caplog):
    api = FakeApi()
    api.failure = ApiError(403, "Forbidden")
    warn(api, SHOP, "BudgetExceeded", "9 > 6")
    assert api.events == []
    assert "could not post the BudgetExceeded event: 403 Forbidden" in caplog.text


def test_an_event_into_a_terminating_namespace_is_no_warning(caplog):
    caplog.set_level(logging.INFO)
    api = FakeApi()
    api.failure = ApiError(403, "Forbidden", '{"reason": "NamespaceTerminating"}')
    warn(api, SHOP, "BudgetExceeded", "9 > 6")
    assert "is being deleted" in caplog.text
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


def test_warn_posts_through_the_api():
    api = FakeApi()
    warn(api, SHOP, "BudgetExceeded", "9 > 6")
    assert api.events == [("BudgetExceeded", "9 > 6")]
