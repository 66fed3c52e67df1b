"""API layer of the reference manager (the original plan's app.py).

A reference implementation of the ORIGINAL Python/Flask manager design,
written to benchmark Kattila's Rust receiver against it. See README.md.

    POST /status/updates     a report (direct or relayed): parse -> verify
                             HMAC, timestamp and nonce -> process -> commit
                             -> {"status": "ok"}
    POST /status/register    a register message, same pipeline
    GET  /status/healthcheck {"status": "ok"}
    GET  /status/agents      the fleet
    GET  /status/alarms      active alarms
"""

import sqlite3
import time

from flask import Flask, jsonify, request

import db
import processor
import security

MAX_BODY = 1024 * 1024

app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

db.init_db()


def error(status, code, detail):
    return jsonify({"error": code, "detail": detail}), status


@app.errorhandler(413)
def too_large(_e):
    return error(413, "too_large", "body over 1 MiB")


@app.errorhandler(404)
def not_found(_e):
    return error(404, "not_found", "no such endpoint")


@app.errorhandler(405)
def bad_method(_e):
    return error(405, "method_not_allowed", "method not allowed")


@app.errorhandler(500)
def internal(_e):
    return error(500, "internal", "internal error")


def ingest(expected_kind):
    body = request.get_data(cache=False)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return error(400, "bad_json", "body is not UTF-8")
    try:
        layers = security.unwrap(text)
        if layers[-1][0]["kind"] != expected_kind:
            raise security.Rejected(400, "wrong_kind", f"this endpoint takes {expected_kind}")
        security.verify(layers)
    except security.Rejected as r:
        return error(r.status, r.code, r.detail)

    conn = db.get_conn()
    now = int(time.time())
    try:
        processor.process(conn, layers, text, now)
        conn.commit()
    except sqlite3.Error as e:
        conn.rollback()
        app.logger.warning("database error: %s", e)
        return error(503, "db_error", str(e))
    security.remember(layers)
    return jsonify({"status": "ok"})


@app.post("/status/updates")
def updates():
    return ingest("report")


@app.post("/status/register")
def register():
    return ingest("register")


@app.get("/status/healthcheck")
def healthcheck():
    return jsonify({"status": "ok"})


@app.get("/status/agents")
def agents():
    return jsonify(db.list_agents())


@app.get("/status/alarms")
def alarms():
    return jsonify(db.list_active_alarms())
