"""Shared pytest setup: import paths, the e2e gate, and the real database services.

`postgres_server` and `pgbouncer_server` are session-scoped: one PostgreSQL cluster and one
pgbouncer (configured like the operator's sidecar, transaction pooling) serve every test
that needs a database, with the sample project's tables migrated once.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "operator"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from tests.fixtures import services  # noqa: E402

PG_POOL_SIZE = 40
PG_MAX_CONNECTIONS = 100


def _services_available() -> str | None:
    if not (services.PG_BIN / "postgres").exists():
        return (f"PostgreSQL not found in {services.PG_BIN} (apt-get install postgresql, or set "
                "DJANGOSCALE_PG_BIN)")
    if not os.path.exists(services.PGBOUNCER):
        return f"{services.PGBOUNCER} not found (apt-get install pgbouncer)"
    return None


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="djangoscale-tests-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def postgres_server(services_dir: Path) -> Iterator[services.Postgres]:
    services.require(_services_available())
    with services.postgres(services_dir, max_connections=PG_MAX_CONNECTIONS) as pg:
        yield pg


@pytest.fixture(scope="session")
def pgbouncer_server(
    postgres_server: services.Postgres, services_dir: Path
) -> Iterator[services.PgBouncer]:
    config = services.pgbouncer_config_for(postgres_server, pool_size=PG_POOL_SIZE)
    with services.pgbouncer(config, services.pgbouncer_auth_for(), services_dir) as bouncer:
        services.migrate_sample_app(
            bouncer.database_env(), REPO / "tests" / "sampleapp", sys.executable
        )
        yield bouncer


@pytest.fixture
def postgres_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`with postgres_factory(max_connections=20) as pg:` for a test that needs its own cluster."""
    services.require(_services_available())
    return lambda **kwargs: services.postgres(tmp_path, **kwargs)


@pytest.fixture
def pgbouncer_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`with pgbouncer_factory(ini_text, auth_text) as bouncer:` runs that exact config."""
    return lambda config_text, auth_text: services.pgbouncer(config_text, auth_text, tmp_path)


@pytest.hookimpl(hookwrapper=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """The last lines of every run: how many tests were skipped, and why.

    In CI a missing service already fails its tests (services.require); any skip left there
    fails the run too (pytest_sessionfinish). Outside CI a skip is a warning that names what
    to install: the run did not prove what those tests prove."""
    yield  # after pytest's own summary, so these are the last lines
    skipped = terminalreporter.stats.get("skipped", [])
    reasons: dict[str, int] = {}
    for report in skipped:
        longrepr = report.longrepr
        reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.write_sep("=", f"{len(skipped)} skipped")
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{count:4d} skipped: {reason}")
    if skipped and not os.environ.get("CI"):
        terminalreporter.write_line(
            f"WARNING: {len(skipped)} tests did not run; install what is named above "
            "(scripts/setup.sh) to run them", yellow=True, bold=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") and reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
