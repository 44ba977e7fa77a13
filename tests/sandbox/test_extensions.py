"""What the sandbox adds beyond the guide only when asked, and the optional fields it leaves out."""

from __future__ import annotations

import json

import httpx
from websockets.asyncio.client import connect

from adapters.sandbox import SandboxConfig, running_sandbox
from adapters.sandbox.config import Extensions
from adapters.sandbox.omissions import OPTIONAL_FIELDS
from tests.sandbox import guide_examples as guide
from tests.sandbox.support import bearer, fetch_token, receive_json, subscribe

EVERY_EXTENSION = Extensions(
    frame_ids=True,
    subscription_acks=True,
    per_event_channels=True,
    unknown_ids=True,
    loan_links=True,
    post_receipts=True,
)


def extended(**config: object) -> SandboxConfig:
    return SandboxConfig(events_per_second=0, omit_optional_fields=0, extensions=EVERY_EXTENSION, **config)


async def test_frame_ids_acknowledgements_and_per_event_channels(http: httpx.AsyncClient) -> None:
    async with running_sandbox(extended()) as sandbox:
        token = await fetch_token(http, sandbox)
        async with connect(f"{sandbox.ws_url('traffic-light')}?token={token}") as ws:
            await ws.send(json.dumps({"event": "subscribe", "data": {"channel": "market_risk"}}))
            ack = await receive_json(ws)
            await ws.send(json.dumps({"event": "subscribe", "data": {"channel": "nowhere"}}))
            error = await receive_json(ws)
            sandbox.emit("traffic-light", "zone_classification_updated")  # another channel: not sent
            first = sandbox.emit("traffic-light", "market_risk_updated")
            second = sandbox.emit("traffic-light", "market_risk_updated")
            frames = [await receive_json(ws) for _ in range(2)]

    assert ack == {"event": "subscribed", "data": {"channel": "market_risk", "channels": ["market_risk"]}}
    assert error["event"] == "error" and error["data"]["code"] == "unknown_channel"
    assert error["data"]["details"]["channels"] == ["zone_updates", "market_risk", "*"]
    assert first and second and [frame["id"] for frame in frames] == [first.id + 0, first.id + 1] == [2, 3]
    assert all(set(frame) == {"event", "data"} | guide.FRAME_EXTENSION_FIELDS for frame in frames)


async def test_unknown_ids_loan_links_and_post_receipts(http: httpx.AsyncClient) -> None:
    async with running_sandbox(extended()) as sandbox:
        token = await fetch_token(http, sandbox)
        tls, pms = sandbox.system_url("traffic-light"), sandbox.system_url("pms")
        zones = await http.get(
            f"{tls}/api/traffic-light/zones", params={"properties": "property_1,ghost"}, headers=bearer(token)
        )
        composition = await http.get(f"{pms}/api/pms/portfolios/portfolio_456/composition", headers=bearer(token))
        posted = await http.post(
            f"{pms}/api/pms/portfolios/portfolio_456/recommendations",
            json=guide.PMS_RECOMMENDATIONS,
            headers=bearer(token),
        )

    assert zones.json()["unknown_properties"] == ["ghost"]
    loan = composition.json()["loans"][0]
    assert set(loan) == set(guide.COMPOSITION["loans"][0]) | guide.LOAN_EXTENSION_FIELDS
    assert posted.status_code == 202 and posted.json()["status"] == "accepted"


async def test_optional_fields_are_sometimes_left_out_and_nothing_else(http: httpx.AsyncClient) -> None:
    async with running_sandbox(SandboxConfig(events_per_second=0, omit_optional_fields=0.5)) as sandbox:
        frames = [sandbox.emit("traffic-light", "zone_classification_updated") for _ in range(200)]
        token = await fetch_token(http, sandbox)
        url = f"{sandbox.system_url('pms')}/api/pms/portfolios/portfolio_456/composition"
        reads = [(await http.get(url, headers=bearer(token))).json()["loans"] for _ in range(2)]

    optional = set(OPTIONAL_FIELDS["zone_classification_updated"])
    required = set(guide.ZONE_CLASSIFICATION_UPDATED["data"]) - optional
    shapes = [set(frame.data) for frame in frames if frame is not None]
    assert all(required <= shape <= required | optional for shape in shapes)
    assert 0.3 < sum("old_zone" in shape for shape in shapes) / len(shapes) < 0.7
    loans = reads[0]
    lacking = [loan for loan in loans if "appreciation_rate" not in loan]
    assert 0.3 < len(lacking) / len(loans) < 0.7
    assert reads[0] == reads[1]  # an item lacks the same fields at every read
    guide_fields = set(guide.COMPOSITION["loans"][0])
    assert all(guide_fields - set(OPTIONAL_FIELDS["composition_loan"]) <= set(loan) <= guide_fields for loan in loans)


async def test_a_socket_without_acknowledgements_gets_events_right_after_subscribing(http: httpx.AsyncClient) -> None:
    async with running_sandbox(SandboxConfig(events_per_second=0)) as sandbox:
        token = await fetch_token(http, sandbox)
        async with connect(f"{sandbox.ws_url('pms')}?token={token}") as ws:
            await subscribe(ws, sandbox, "pms")
            frame = sandbox.emit("pms", "metrics_updated")
            assert frame is not None and await receive_json(ws) == {"event": "metrics_updated", "data": frame.data}
