"""Database layer of the reference manager (the original plan's db.py).

One sqlite3 connection per thread (gunicorn sync workers have one thread per
process, so in practice one connection per worker process), opened with
PRAGMA journal_mode=WAL. The schema is created on startup with
CREATE TABLE IF NOT EXISTS.

The original DESIGN.md schema is not available to us; the tables below are
reconstructed from the plan and the README's table list, and hold no more
than the plan asks for: agents, reports (full raw envelope), agent_interfaces,
topology_edges (wireguard peers) and alarms.

Environment:
  KATTILA_DB            database path (default kattila_manager.db)
  KATTILA_SYNCHRONOUS   if set (OFF, NORMAL, FULL, EXTRA), PRAGMA synchronous
                        for every connection; unset = the library default
                        (FULL in WAL mode for the stock SQLite builds,
                        including the one Python uses here)
  KATTILA_BUSY_TIMEOUT  seconds a writer waits for the database lock
                        (sqlite3.connect(timeout=...), default 30)
"""

import json
import os
import sqlite3
import threading

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    agent_id       TEXT PRIMARY KEY,
    hostname       TEXT,
    agent_version  TEXT,
    first_seen_at  INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS reports (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    tick         INTEGER,
    nonce        TEXT NOT NULL,
    timestamp    INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    raw_json     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_reports_agent ON reports (agent_id, received_at);

CREATE TABLE IF NOT EXISTS agent_interfaces (
    agent_id      TEXT NOT NULL,
    name          TEXT NOT NULL,
    kind          TEXT,
    state         TEXT,
    mtu           INTEGER,
    mac           TEXT,
    addresses     TEXT,          -- JSON array of "address/prefix"
    rx_bytes      INTEGER,
    tx_bytes      INTEGER,
    rx_errors     INTEGER,
    tx_errors     INTEGER,
    last_seen_at  INTEGER NOT NULL,
    PRIMARY KEY (agent_id, name)
);

CREATE TABLE IF NOT EXISTS topology_edges (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    from_agent_id    TEXT NOT NULL,
    from_key         TEXT,        -- local WireGuard public key
    to_key           TEXT NOT NULL, -- peer WireGuard public key
    edge_type        TEXT NOT NULL,
    interface        TEXT,
    endpoint         TEXT,
    allowed_ips      TEXT,        -- JSON array
    latest_handshake INTEGER,
    rx_bytes         INTEGER,
    tx_bytes         INTEGER,
    last_seen_at     INTEGER NOT NULL,
    UNIQUE (from_agent_id, to_key, edge_type)
);
CREATE INDEX IF NOT EXISTS idx_edges_from_key ON topology_edges (from_key);

CREATE TABLE IF NOT EXISTS alarms (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id    TEXT NOT NULL,
    alarm_type  TEXT NOT NULL,
    message     TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'active',
    created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_alarms_status ON alarms (status, created_at);
"""

_local = threading.local()


def db_path():
    return os.environ.get("KATTILA_DB", "kattila_manager.db")


def _connect():
    timeout = float(os.environ.get("KATTILA_BUSY_TIMEOUT", "30"))
    # Python's default isolation level: a DEFERRED transaction is opened
    # implicitly before the first INSERT/UPDATE/DELETE and ends at commit().
    conn = sqlite3.connect(db_path(), timeout=timeout)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    sync = os.environ.get("KATTILA_SYNCHRONOUS")
    if sync:
        if sync.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"KATTILA_SYNCHRONOUS={sync!r}")
        conn.execute(f"PRAGMA synchronous={sync.upper()}")
    return conn


def get_conn():
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = _connect()
    return conn


def init_db():
    conn = get_conn()
    conn.executescript(SCHEMA)
    conn.commit()


def synchronous():
    return get_conn().execute("PRAGMA synchronous").fetchone()[0]


# --- data access methods used by the processor -----------------------------


def upsert_agent(conn, agent_id, hostname, agent_version, now):
    conn.execute(
        """INSERT INTO agents (agent_id, hostname, agent_version, first_seen_at, last_seen_at)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (agent_id) DO UPDATE SET
               hostname = COALESCE(excluded.hostname, agents.hostname),
               agent_version = COALESCE(excluded.agent_version, agents.agent_version),
               last_seen_at = excluded.last_seen_at""",
        (agent_id, hostname, agent_version, now, now),
    )


def insert_report(conn, data, raw_json, now):
    cur = conn.execute(
        """INSERT INTO reports (agent_id, kind, tick, nonce, timestamp, received_at, raw_json)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        (
            data["agent_id"],
            data["kind"],
            data.get("tick"),
            data["nonce"],
            data["timestamp"],
            now,
            raw_json,
        ),
    )
    return cur.lastrowid


def update_interfaces(conn, agent_id, interfaces, now):
    """Replace the agent's interface snapshot with the reported one."""
    conn.execute("DELETE FROM agent_interfaces WHERE agent_id = ?", (agent_id,))
    conn.executemany(
        """INSERT OR REPLACE INTO agent_interfaces
               (agent_id, name, kind, state, mtu, mac, addresses,
                rx_bytes, tx_bytes, rx_errors, tx_errors, last_seen_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            (
                agent_id,
                i.get("name"),
                i.get("kind"),
                i.get("state"),
                i.get("mtu"),
                i.get("mac"),
                json.dumps(i.get("addresses") or []),
                i.get("rx_bytes", 0),
                i.get("tx_bytes", 0),
                i.get("rx_errors", 0),
                i.get("tx_errors", 0),
                now,
            )
            for i in interfaces
        ],
    )


def update_edges(conn, agent_id, wireguard, now):
    """Create or update one 'wireguard' edge per reported peer."""
    rows = []
    for dev in wireguard:
        for p in dev.get("peers") or []:
            rows.append(
                (
                    agent_id,
                    dev.get("public_key"),
                    p.get("public_key"),
                    dev.get("name"),
                    p.get("endpoint"),
                    json.dumps(p.get("allowed_ips") or []),
                    p.get("latest_handshake"),
                    p.get("rx_bytes", 0),
                    p.get("tx_bytes", 0),
                    now,
                )
            )
    conn.executemany(
        """INSERT INTO topology_edges
               (from_agent_id, from_key, to_key, edge_type, interface, endpoint,
                allowed_ips, latest_handshake, rx_bytes, tx_bytes, last_seen_at)
           VALUES (?, ?, ?, 'wireguard', ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (from_agent_id, to_key, edge_type) DO UPDATE SET
               from_key = excluded.from_key,
               interface = excluded.interface,
               endpoint = excluded.endpoint,
               allowed_ips = excluded.allowed_ips,
               latest_handshake = excluded.latest_handshake,
               rx_bytes = excluded.rx_bytes,
               tx_bytes = excluded.tx_bytes,
               last_seen_at = excluded.last_seen_at""",
        rows,
    )


def create_alarm(conn, agent_id, alarm_type, message, now):
    conn.execute(
        """INSERT INTO alarms (agent_id, alarm_type, message, status, created_at)
           VALUES (?, ?, ?, 'active', ?)""",
        (agent_id, alarm_type, message, now),
    )


# --- reads for the GET endpoints ---------------------------------------------


def list_agents():
    rows = get_conn().execute(
        "SELECT agent_id, hostname, agent_version, first_seen_at, last_seen_at "
        "FROM agents ORDER BY agent_id"
    ).fetchall()
    return [dict(r) for r in rows]


def list_active_alarms():
    rows = get_conn().execute(
        "SELECT id, agent_id, alarm_type, message, status, created_at "
        "FROM alarms WHERE status = 'active' ORDER BY created_at DESC, id DESC"
    ).fetchall()
    return [dict(r) for r in rows]
