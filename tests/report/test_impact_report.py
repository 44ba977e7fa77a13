"""The report of an impact analysis: the analysis's own numbers in their units, every rule, an escaped page."""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import json_format

from equihome.impact.v1 import impact_analysis_service_pb2 as service_pb2
from server.mapping.impact import analysis_to_proto
from server.report.kinds import build_report, kind_of
from server.report.page import Table
from server.report_cli import main as report_main
from simulation.config import load_config
from simulation.impact import Applicant, CandidateLoan, analyze, build_base
from tests.simulation.test_impact import BOOK, deterministic

HOSTILE_ID = "<script>alert(1)</script>"


def analysis(loan_id: str = "loan_1", **applicant: bool):
    base = build_base(load_config(deterministic(BOOK)))
    loan = CandidateLoan(loan_id, 1_000_000, 2_000_000, zone=0, region=0, origination_month=3)
    result = analyze(base, loan, applicant=Applicant(**applicant))
    return analysis_to_proto(result, analysis_id="analysis_1", portfolio_id="portfolio_1")


def rows_of(report, section_key: str) -> dict[str, tuple[str, ...]]:
    section = next(s for s in report.sections if s.key == section_key)
    table = next(block for block in section.blocks if isinstance(block, Table))
    return {row[0]: row for row in table.rows}


def test_the_report_shows_the_analysis_as_computed() -> None:
    message = analysis(zone_eligible=False)
    assert kind_of(message).name == "impact_analysis"
    report = build_report(message)
    # hand-checked shares of the deterministic book: the loan is 1M of 4M, its zone 2M of 4M
    risk = rows_of(report, "risk")
    assert risk["Share of the loan"][1] == "25.00%"
    assert risk["Share of the loan's zone after"][1] == "50.00%"
    assert risk["Zone HHI after"][1] == "0.38"  # 0.5² + 0.25² + 0.25² = 0.375
    rules = rows_of(report, "rules")
    assert len(rules) == len(message.recommendation.reasons)
    assert rules["ZONE_ELIGIBILITY"][1:3] == ("FAIL", "yes")  # the closed zone decides the rejection
    highlights = {h.label: h.value for h in report.highlights}
    assert highlights["Decision"] == "Reject" and highlights["Recommended amount"] == "AUD 0"
    irr = rows_of(report, "before-after")["Mean LP net IRR"]
    assert irr[1] == f"{100 * message.deltas.lp_net_irr.before:,.2f}%"


def test_a_saved_response_becomes_an_escaped_page(tmp_path: Path) -> None:
    response = service_pb2.AnalyzeLoanImpactResponse(analysis=analysis(HOSTILE_ID))
    source = tmp_path / "impact.json"
    source.write_text(json.dumps(json_format.MessageToDict(response)))
    assert report_main([str(source)]) == 0
    page = source.with_suffix(".html").read_text()
    assert HOSTILE_ID not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Portfolio impact of loan" in page and "chart-impact-deltas" in page
