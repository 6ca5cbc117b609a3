"""Issue 13: "Fixed — please re-check" is answered on the page and by e-mail, with the same figures.

The agent is tests/sim's whole agent (tests/unit/test_web_console.py's world: srv-1 shut for
overage at 15m); the e-mail goes through the agent's own CustomerNotices into the sim's relay
(tests/sim/edges.SimSmtp), rendered by drivers/notify/notice.py as SMTP would send it.
"""

from __future__ import annotations

import html as htmlmod
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rackwarden.agent.notices import recheck_notice
from rackwarden.agent.web.recheck import Measured, answer, still_over
from rackwarden.drivers.notify import render_email

from tests.unit.test_web_console import World, csrf, run


def _flash(html: str) -> tuple[str, str]:
    m = re.search(r'<p class="flash-(ok|error)">(.*?)</p>', html, re.S)
    assert m, html[:2000]
    return m.group(1), htmlmod.unescape(m.group(2))


def _mail_text(w: World, stage: str) -> tuple[object, str]:
    [sent] = [x for x in w.agent.mail.sent if x.notice.stage.startswith("recheck")]
    assert sent.notice.stage == stage
    msg = render_email(sent.notice, "noc@idc.example")
    return sent, msg.get_body(preferencelist=("plain",)).get_content()


def _figures(flash: str) -> tuple[str, str, str]:
    m = re.search(r"Last measured: out ([\d.]+) Mbit/s, in ([\d.]+) Mbit/s, cap ([\d.]+) Mbit/s", flash)
    assert m, flash
    return m.group(1), m.group(2), m.group(3)


def test_a_passed_recheck_is_e_mailed_with_what_the_page_says(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.login("alice", customer=True)
        page = (await w.page("/customer/server/srv-1?lang=en"))[1]
        r = await w.client.post("/customer/server/srv-1/recheck", data={"csrf": csrf(page)}, allow_redirects=False)
        assert r.status == 303
        assert w.phase("srv-1", "overage") == "restored"
        assert w.agent.world.switch("sw1").port("Gi0/1").admin == "up"
        kind, flash = _flash((await w.page("/customer/server/srv-1?lang=en"))[1])
        assert kind == "ok" and flash.startswith("Re-check passed (overage): the port is restored")
        assert "e-mailed to noc@cust-1.example" in flash
        out, in_, cap = _figures(flash)
        assert cap == "10.00"
        sent, text = _mail_text(w, "recheck_restored")
        assert sent.notice.to == ("noc@cust-1.example",) and sent.delivery.delivered
        assert "重新检查" in text and "检查通过" in text and "The re-check passed" in text
        assert "the port is restored: the switch read it back" in text  # the page's words
        for name, value in (("rate_out", out), ("rate_in", in_), ("cap", cap)):
            assert f"{name}: {value} Mbit/s" in text and f"{name}：{value} Mbit/s" in text
        assert "port: up" in text
        # Recorded as every notice is: its row (shown on the page), an audit record.
        assert w.enforcer.store.notice(sent.notice.key) == (True, sent.delivery.detail)
        audit = w.enforcer.store.audit_rows("srv-1")
        assert any(a["decision"] == "notify_recheck_restored" and a["result"].startswith("delivered") for a in audit)

    run(tmp_path, body)


def test_a_recheck_while_the_traffic_is_over_the_rule_is_refused_on_the_page_and_by_e_mail(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        # The last poll's verdict, as metering publishes it: srv-1 still sends 15 Mbit/s.
        m = w.enforcer.metrics
        m.server_cap_state.labels("srv-1").set(2)
        m.port_rate_bps.labels("srv-1", "sw1", "Gi0/1", "outbound").set(15_000_000)
        m.port_rate_bps.labels("srv-1", "sw1", "Gi0/1", "inbound").set(2_000_000)
        await w.login("alice", customer=True)
        page = (await w.page("/customer/server/srv-1?lang=en"))[1]
        await w.client.post("/customer/server/srv-1/recheck", data={"csrf": csrf(page)}, allow_redirects=False)
        # No restore was asked for: the port stays shut, no restore record.
        assert w.phase("srv-1", "overage") == "shut"
        assert w.agent.world.switch("sw1").port("Gi0/1").admin == "down"
        assert [a.action for a in w.enforcer.store.actions("srv-1")] == ["shut"]
        kind, flash = _flash((await w.page("/customer/server/srv-1?lang=en"))[1])
        assert kind == "error" and flash.startswith("Re-check refused (overage), the restriction stays: "
                                                    "the traffic is still over the rule")
        assert _figures(flash) == ("15.00", "2.00", "10.00")
        _, text = _mail_text(w, "recheck_refused")
        assert "检查未通过" in text and "The re-check was refused" in text
        assert "the traffic is still over the rule: 15.00 Mbit/s out, 2.00 Mbit/s in against the 10.00 Mbit/s cap" \
            in text
        assert "rate_out: 15.00 Mbit/s" in text and "cap：10.00 Mbit/s" in text and "port: down" in text

    run(tmp_path, body)


def test_the_page_says_so_when_the_answer_cannot_be_e_mailed(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        w.agent.mail.bouncing.add("srv-1")
        await w.login("alice", customer=True)
        page = (await w.page("/customer/server/srv-1?lang=en"))[1]
        await w.client.post("/customer/server/srv-1/recheck", data={"csrf": csrf(page)}, allow_redirects=False)
        _, flash = _flash((await w.page("/customer/server/srv-1?lang=en"))[1])
        assert "The answer could not be e-mailed: all recipients refused" in flash
        sent, _ = _mail_text(w, "recheck_restored")
        assert w.enforcer.store.notice(sent.notice.key) == (False, sent.delivery.detail)

    run(tmp_path, body)


M = Measured(0.0, 0.0, 10_000_000, "ok")


@pytest.mark.parametrize("kw, restored, port_up, why", [
    ({"over": "the traffic is still over", "error": None}, False, False, "the traffic is still over"),
    ({"error": "enforcement of overage is off"}, False, False, "enforcement of overage is off"),
    ({"phase_after": "shut", "refused": "lease: not ours"}, False, False, "lease: not ours"),
    ({"others_shut": ("nonpayment",)}, True, False, "the port stays shut for nonpayment"),
    ({"last_restore_state": "APPLIED"}, True, True, "the port is restored"),
    ({"last_restore_state": "DRYRUN"}, True, False, "notify mode"),
    ({"last_restore_state": "FAILED"}, True, False, "has not confirmed the restore (FAILED)"),
])
def test_the_answer_of_a_recheck(kw: dict[str, object], restored: bool, port_up: bool, why: str) -> None:
    args: dict[str, object] = {"over": None, "error": None, "phase_after": "restored", "refused": None,
                               "others_shut": (), "last_restore_state": None} | kw
    a = answer("overage", M, **args)  # type: ignore[arg-type]
    assert (a.restored, a.port_up) == (restored, port_up) and why in a.why


def test_only_an_overage_over_the_cap_at_the_last_poll_stops_a_recheck() -> None:
    over = Measured.of(15e6, 1e6, 10_000_000, 2.0)
    assert over.state == "sustained" and still_over("overage", over) is not None
    assert still_over("abuse", over) is None  # the ladder judges the detector's next observation
    assert still_over("overage", Measured.of(float("nan"), None, 10_000_000, None)) is None  # no verdict yet
    assert still_over("overage", Measured.of(3e6, 1e6, 10_000_000, 0.0)) is None


@pytest.mark.parametrize("language", ["zh", "en", "both"])
def test_recheck_notices_render_in_the_configured_language(tmp_path: Path, language: str) -> None:
    from rackwarden.agent.config import load as load_config

    from tests.unit.test_web_console import CONFIG

    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.replace("${state_dir}", str(tmp_path)).replace(
        "notify:\n", f"notify:\n  language: {language}\n"))
    cfg = load_config(path)
    server = cfg.server("srv-1")
    assert server is not None
    n = recheck_notice(cfg, server, key="srv-1:overage:1:recheck:x", reason="overage", restored=False,
                       rule="R1/R2", summary="still over", figures=(("cap", "10.00", "Mbit/s"),),
                       at=datetime(2026, 11, 16, 2, 30, tzinfo=UTC))
    msg = render_email(n, "noc@idc.example")
    text = msg.get_body(preferencelist=("plain",)).get_content()
    assert ("检查未通过" in text) == (language != "en") and ("was refused" in text) == (language != "zh")
    assert "2026-11-16 10:30:00+08:00" in text and msg["X-RackWarden-Stage"] == "recheck_refused"
    assert "Re-check" in str(msg["Subject"]) or "重新检查" in str(msg["Subject"])
