"""Data processor of the reference manager (the original plan's processor.py).

Invoked for every verified message, inside one transaction that the caller
commits (one commit per request, as in the original):

- Agents: upsert the origin's agent_id (auto-registration) and bump
  last_seen_at; relaying agents' last_seen_at is bumped too.
- Reports: store the raw envelope, exactly as received, for auditing.
- Interfaces: compare the reported interfaces with agent_interfaces, raise an
  alarm for each interface that disappeared or left the "up" state, then
  replace the agent's interface rows with the reported ones.
- Topology edges: one edge_type='wireguard' row per WireGuard peer, created
  or updated.
"""

import db


def process(conn, layers, raw_text, now):
    origin = layers[-1][0]
    agent_id = origin["agent_id"]

    # The first statement is a write, so the implicit transaction takes the
    # write lock (waiting up to the busy timeout) before anything is read.
    db.upsert_agent(conn, agent_id, origin.get("hostname"), origin.get("agent_version"), now)
    for data, _raw, _mac in layers[:-1]:
        db.upsert_agent(conn, data["agent_id"], None, None, now)

    db.insert_report(conn, origin, raw_text, now)

    if origin["kind"] != "report":
        return

    interfaces = origin.get("interfaces") or []
    previous = {
        r["name"]: r["state"]
        for r in conn.execute(
            "SELECT name, state FROM agent_interfaces WHERE agent_id = ?", (agent_id,)
        )
    }
    current = {i["name"]: i.get("state") for i in interfaces}
    for name, state in previous.items():
        if name not in current:
            db.create_alarm(conn, agent_id, "interface_missing",
                            f"Interface {name} disappeared", now)
        elif state == "up" and current[name] != "up":
            db.create_alarm(conn, agent_id, "interface_down",
                            f"Interface {name} went {current[name]}", now)
    db.update_interfaces(conn, agent_id, interfaces, now)

    db.update_edges(conn, agent_id, origin.get("wireguard") or [], now)
