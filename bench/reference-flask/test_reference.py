"""Self-tests of the reference manager: python -m unittest test_reference

Uses the test vectors of docs/protocol.md (exact-bytes MAC, relay) and
Flask's test client on a temporary database.
"""

import hashlib
import hmac
import json
import os
import re
import sqlite3
import tempfile
import time
import unittest

TMP = tempfile.mkdtemp()
os.environ["KATTILA_DB"] = os.path.join(TMP, "test.db")
os.environ["KATTILA_PSK"] = "bench-key"

import app as app_module  # noqa: E402
import security  # noqa: E402

PROTOCOL = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "protocol.md")


def vector(name):
    with open(PROTOCOL, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"```\w+ kattila-vector:" + re.escape(name) + r"\n(.*?)\n```", text, re.S)
    return m.group(1)


def envelope(data_text, key=b"bench-key", spacing=""):
    mac = hmac.new(key, data_text.encode(), hashlib.sha256).hexdigest()
    return '{"version":1,%s"data":%s,"hmac":"%s"}' % (spacing, data_text, mac)


def report(agent="a1", tick=1, nonce=None, ts=None, ifaces=("eth0", "wg0"), state="up"):
    data = {
        "kind": "report", "agent_id": agent, "timestamp": int(ts or time.time()),
        "nonce": nonce or os.urandom(16).hex(), "tick": tick,
        "observed_at": int(time.time()), "hostname": "h-" + agent, "agent_version": "0.1",
        "system": {"uptime_secs": 1, "load": [0, 0, 0], "kernel": "k"},
        "interfaces": [{"name": n, "kind": "ether", "state": state, "mtu": 1500,
                        "addresses": ["192.0.2.1/24"]} for n in ifaces],
        "wireguard": [{"name": "wg0", "public_key": "A" * 43 + "=", "peers": [
            {"public_key": "B" * 43 + "=", "allowed_ips": ["10.0.0.2/32"], "rx_bytes": 1, "tx_bytes": 2}]}],
    }
    # Deliberately unusual key order and spacing: the MAC covers these bytes.
    return json.dumps(data, indent=1, sort_keys=True)


class VectorTests(unittest.TestCase):
    def setUp(self):
        self.keys = security.KEYS
        security.KEYS = [vector("psk").encode()]

    def tearDown(self):
        security.KEYS = self.keys

    def test_report_vector(self):
        data = vector("report-data")
        env = '{"version":1,"data":%s,"hmac":"%s"}' % (data, vector("report-hmac"))
        layers = security.unwrap(env)
        self.assertEqual(layers[0][1], data.encode())
        security.verify(layers, now=1767225600)
        bad = env.replace('"edge-1"', '"edge-2"')
        with self.assertRaises(security.Rejected) as r:
            security.verify(security.unwrap(bad), now=1767225600)
        self.assertEqual(r.exception.code, "bad_mac")
        with self.assertRaises(security.Rejected) as r:
            security.verify(layers, now=1767225600 + 601)
        self.assertEqual(r.exception.code, "stale")

    def test_relay_vector(self):
        layers = security.unwrap(vector("relay-envelope"))
        self.assertEqual([l[0]["kind"] for l in layers], ["relay", "report"])
        self.assertEqual(layers[0][2], vector("relay-hmac"))
        self.assertEqual(layers[1][1], vector("report-data").encode())
        security.verify(layers, now=1767225600)


class AppTests(unittest.TestCase):
    def setUp(self):
        self.client = app_module.app.test_client()

    def rows(self, sql, *args):
        with sqlite3.connect(os.environ["KATTILA_DB"]) as c:
            return c.execute(sql, args).fetchall()

    def post(self, body):
        return self.client.post("/status/updates", data=body)

    def test_ingest_replay_alarm(self):
        before = self.rows("SELECT count(*) FROM reports")[0][0]
        body = envelope(report("x1"), spacing=" ")
        r = self.post(body)
        self.assertEqual((r.status_code, r.get_json()), (200, {"status": "ok"}))
        self.assertEqual(self.rows("SELECT count(*) FROM reports")[0][0], before + 1)
        self.assertEqual(self.rows("SELECT raw_json FROM reports ORDER BY id DESC LIMIT 1")[0][0], body)
        self.assertEqual(self.rows("SELECT count(*) FROM agent_interfaces WHERE agent_id='x1'")[0][0], 2)
        self.assertEqual(self.rows("SELECT count(*) FROM topology_edges WHERE from_agent_id='x1'")[0][0], 1)
        r = self.post(body)
        self.assertEqual((r.status_code, r.get_json()["error"]), (409, "replay"))
        r = self.post(envelope(report("x1", tick=2, ifaces=("eth0",))))
        self.assertEqual(r.status_code, 200)
        alarms = self.rows("SELECT message FROM alarms WHERE agent_id='x1'")
        self.assertEqual(alarms, [("Interface wg0 disappeared",)])
        r = self.post(envelope(report("x1", tick=3, ifaces=("eth0",), state="down")))
        self.assertEqual(r.status_code, 200)
        self.assertEqual(len(self.rows("SELECT message FROM alarms WHERE agent_id='x1'")), 2)

    def test_rejections(self):
        before = self.rows("SELECT count(*) FROM reports")[0][0]
        cases = [
            (b"\xff", 400, "bad_json"),
            (b"{", 400, "bad_json"),
            (envelope(report()).replace('"version":1', '"version":2'), 400, "unsupported_version"),
            (envelope(report(), key=b"other"), 401, "bad_mac"),
            (envelope(report(ts=time.time() - 700)), 401, "stale"),
            ('{"version":1,"data":{},"data":{},"hmac":"' + "0" * 64 + '"}', 400, "bad_json"),
            (b"x" * (1024 * 1024 + 1), 413, "too_large"),
        ]
        for body, status, code in cases:
            r = self.post(body)
            self.assertEqual((r.status_code, r.get_json()["error"]), (status, code), body[:80])
        self.assertEqual(self.rows("SELECT count(*) FROM reports")[0][0], before)

    def test_reads(self):
        self.assertEqual(self.client.get("/status/healthcheck").get_json(), {"status": "ok"})
        self.post(envelope(report("r1")))
        self.assertIn("r1", [a["agent_id"] for a in self.client.get("/status/agents").get_json()])
        self.assertIsInstance(self.client.get("/status/alarms").get_json(), list)


if __name__ == "__main__":
    unittest.main()
