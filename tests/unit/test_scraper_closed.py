"""A closed scraper opens no session that a collector still mid-round would leak at exit."""

from __future__ import annotations

from djangoscale.autoscaling.collector import Scraper


async def test_a_closed_scraper_reads_nothing_and_opens_no_session() -> None:
    scraper = Scraper()
    await scraper.close()
    assert await scraper.pod_scrape("127.0.0.1", 9) is None
    assert await scraper.prometheus_rates("http://127.0.0.1:9", "up") is None
    assert scraper._session is None
