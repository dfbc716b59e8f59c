"""pytest plugin of the vLLM tier (`make test-vllm` loads it with `-p tests.vllm_tier`): there,
a skipped test or test module fails the run.

The vLLM tests skip where vLLM is not importable, which suits `make test` on any machine; in
the tier, whose venv was built to have vLLM, a skip means a broken venv and must not pass.
"""

from __future__ import annotations

import pytest

skipped: list[str] = []


def _record(report: pytest.CollectReport | pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _, _, reason = report.longrepr if isinstance(report.longrepr, tuple) else ("", "", str(report.longrepr))
        skipped.append(f"{report.nodeid}: {reason}")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record(report)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record(report)


def pytest_terminal_summary(terminalreporter) -> None:
    if skipped:
        terminalreporter.section("vLLM tier: skips count as failures", red=True)
        for line in skipped:
            terminalreporter.line(line)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
