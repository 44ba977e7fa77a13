"""`equihome-sim report` on the default fund, opened in a real headless Chromium (Debian's package):
every chart rendered, no console error, no request but the file itself, and a screenshot kept under
``test-artifacts/`` (gitignored; ``EQUIHOME_TEST_ARTIFACTS`` moves it).

Without Chromium the test is skipped with the reason, unless ``REQUIRE_BROWSER_TEST=1`` (set by
``.ci/run``, which installs it): then a missing browser fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.report.conftest import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REQUIRE_ENV = "REQUIRE_BROWSER_TEST"
ARTIFACTS = Path(os.environ.get("EQUIHOME_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]
ALLOWED_SCHEMES = ("file:", "data:", "blob:", "about:")


def browser_or_skip() -> str:
    if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message}, and {REQUIRE_ENV}=1 requires it")
    pytest.skip(message)


def equihome_sim(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("equihome-sim")), *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return done


def test_the_default_funds_report_renders_offline_in_chromium(tmp_path: Path) -> None:
    executable = browser_or_skip()
    from playwright.sync_api import sync_playwright

    equihome_sim(
        "simulate",
        str(REPO / "docs/examples/default_fund.json"),
        "--paths",
        "2000",
        "--json",
        "result.json",
        cwd=tmp_path,
    )
    equihome_sim("report", "result.json", "-o", "report.html", cwd=tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.html", "result.json"]
    report = tmp_path / "report.html"

    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
            page = context.new_page()
            page.on("console", lambda message: message.type == "error" and problems.append(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.route(
                "**/*",
                lambda route: (
                    route.continue_() if route.request.url.startswith(ALLOWED_SCHEMES) else route.abort()
                ),
            )
            page.goto(report.as_uri(), wait_until="load")
            page.wait_for_function(
                "[...document.querySelectorAll('figure.chart')].every(f => f.querySelector('svg.main-svg'))",
                timeout=30_000,
            )
            charts = page.evaluate(
                """[...document.querySelectorAll('figure.chart')].map(figure => {
                    const plot = figure.querySelector('.js-plotly-plot');
                    const box = plot.getBoundingClientRect();
                    return {key: figure.dataset.chart, width: box.width, height: box.height,
                            traces: plot.querySelectorAll('g.trace').length,
                            marks: plot.querySelectorAll('g.trace path').length};
                })"""
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=ARTIFACTS / "report-default-fund.png", full_page=True)
        finally:
            browser.close()

    assert problems == []
    assert [url for url in requests if not url.startswith(ALLOWED_SCHEMES)] == []
    assert len(charts) >= 6
    for chart in charts:
        assert chart["width"] > 300 and chart["height"] > 200, chart
        assert chart["traces"] > 0 and chart["marks"] > 0, chart
    assert (ARTIFACTS / "report-default-fund.png").stat().st_size > 50_000
