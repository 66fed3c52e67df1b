"""Security layer of the reference manager (the original plan's security.py).

- PSK history: the current key and up to two previous keys. The original
  fetched the key from a DNS TXT record in a background thread; the
  reference reads it from the environment instead (KATTILA_PSK, and
  optionally KATTILA_PSK_PREVIOUS="older1,older2"), like Kattila's own
  KATTILA_PSK override for tests and air-gapped fleets.
- HMAC verification: HMAC-SHA256 of `data`, compared in constant time
  against each known key.
- Nonce cache: an in-memory collections.OrderedDict of the last 120 nonces.
- Time skew: timestamps more than 10 minutes from the local clock are
  refused.

Deviation from the original, needed to accept Kattila v1 envelopes: the
original parsed the body and re-serialised `data` with json.dumps before
computing the MAC. Protocol v1 requires the MAC over the exact received
bytes of `data`, so this module walks the top level of the envelope with the
standard library's own JSON scanner (json.decoder.scanstring and
JSONDecoder.raw_decode), which parses every member value *and* reports where
it starts and ends in the text. The MAC is computed over
text[start:end].encode("utf-8") of the `data` member: the body was decoded
as strict UTF-8, so re-encoding that slice reproduces the received bytes
exactly. The walk parses the body once, as json.loads would; nothing is
re-serialised.
"""

import hashlib
import hmac
import json
import os
import re
import threading
import time
from collections import OrderedDict
from json.decoder import scanstring

MAX_SKEW_SECONDS = 600
NONCE_WINDOW = 120
MAX_RELAY_LAYERS = 3

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HEX32 = re.compile(r"[0-9a-f]{32}\Z")
_AGENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


class Rejected(Exception):
    """A message refused before processing: HTTP status, error code, detail."""

    def __init__(self, status, code, detail):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def _bad_json(detail):
    return Rejected(400, "bad_json", detail)


def _bad_shape(detail):
    return Rejected(400, "bad_shape", detail)


# --- PSK history ---------------------------------------------------------------


def load_keys():
    keys = []
    current = os.environ.get("KATTILA_PSK", "").strip()
    if current:
        keys.append(current.encode("utf-8"))
    for old in os.environ.get("KATTILA_PSK_PREVIOUS", "").split(",")[:2]:
        old = old.strip()
        if old:
            keys.append(old.encode("utf-8"))
    return keys


KEYS = load_keys()


# --- locating the raw `data` bytes ---------------------------------------------


def scan_object(text, pos):
    """Parse the JSON object at text[pos:].

    Returns ({key: (value, start, end)}, end): each member's parsed value and
    the span of its raw text. Duplicate keys are refused.
    """
    pos = _WS.match(text, pos).end()
    if text[pos : pos + 1] != "{":
        raise ValueError("expected an object")
    pos = _WS.match(text, pos + 1).end()
    members = {}
    if text[pos : pos + 1] == "}":
        return members, pos + 1
    while True:
        if text[pos : pos + 1] != '"':
            raise ValueError("expected a member name")
        key, pos = scanstring(text, pos + 1)
        pos = _WS.match(text, pos).end()
        if text[pos : pos + 1] != ":":
            raise ValueError("expected ':'")
        pos = _WS.match(text, pos + 1).end()
        value, end = _DECODER.raw_decode(text, pos)
        if key in members:
            raise ValueError(f"duplicate member {key!r}")
        members[key] = (value, pos, end)
        pos = _WS.match(text, end).end()
        c = text[pos : pos + 1]
        if c == ",":
            pos = _WS.match(text, pos + 1).end()
        elif c == "}":
            return members, pos + 1
        else:
            raise ValueError("expected ',' or '}'")


def parse_envelope(text, start=0, end=None):
    """Parse the envelope object in text[start:end]; return its members."""
    members, stop = scan_object(text, start)
    limit = len(text) if end is None else end
    if _WS.match(text, stop).end() < limit:
        raise ValueError("trailing characters after the envelope")
    return members


def _check_envelope(members):
    version = members.get("version", (None,))[0]
    if not _is_int(version) or version != 1:
        raise Rejected(400, "unsupported_version", "version must be 1")
    if "data" not in members or not isinstance(members["data"][0], dict):
        raise _bad_shape("data must be an object")
    mac = members.get("hmac", (None,))[0]
    if not isinstance(mac, str) or not _HEX64.match(mac):
        raise _bad_shape("hmac must be 64 lowercase hex characters")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_data(data):
    kind = data.get("kind")
    if kind not in ("report", "relay", "register"):
        raise _bad_shape("kind must be report, relay or register")
    agent_id = data.get("agent_id")
    if not isinstance(agent_id, str) or not _AGENT_ID.match(agent_id):
        raise _bad_shape("bad agent_id")
    if not _is_int(data.get("timestamp")) or not _is_int(data.get("tick")):
        raise _bad_shape("timestamp and tick must be integers")
    nonce = data.get("nonce")
    if not isinstance(nonce, str) or not _HEX32.match(nonce):
        raise _bad_shape("nonce must be 32 lowercase hex characters")
    if kind == "relay":
        if not isinstance(data.get("inner"), dict):
            raise _bad_shape("a relay needs inner")
    elif "inner" in data:
        raise _bad_shape("inner only on relays")
    if kind == "report":
        if not isinstance(data.get("hostname"), str):
            raise _bad_shape("hostname must be a string")
        interfaces = data.get("interfaces", [])
        if not isinstance(interfaces, list) or not all(
            isinstance(i, dict) and isinstance(i.get("name"), str) for i in interfaces
        ):
            raise _bad_shape("bad interfaces")
        wireguard = data.get("wireguard", [])
        if not isinstance(wireguard, list) or not all(
            isinstance(d, dict)
            and isinstance(d.get("peers", []), list)
            and all(
                isinstance(p, dict) and isinstance(p.get("public_key"), str)
                for p in d.get("peers", [])
            )
            for d in wireguard
        ):
            raise _bad_shape("bad wireguard")


def unwrap(text):
    """Parse an envelope and unwrap relay layers iteratively.

    Returns a list of layers, outermost first, each (data, raw_data_bytes, mac).
    The last layer is the origin's message.
    """
    try:
        members = parse_envelope(text)
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise _bad_json(str(e))
    layers = []
    seen = set()
    while True:
        _check_envelope(members)
        data, start, end = members["data"]
        _check_data(data)
        if data["agent_id"] in seen:
            raise Rejected(400, "relay_loop", "an agent_id appears twice in the chain")
        seen.add(data["agent_id"])
        layers.append((data, text[start:end].encode("utf-8"), members["hmac"][0]))
        if data["kind"] != "relay":
            return layers
        if len(layers) > MAX_RELAY_LAYERS:
            raise Rejected(400, "too_many_relays", "more than 3 relay layers")
        # Find the raw span of `inner` inside this layer's data text, and parse
        # the inner envelope in place so its own `data` bytes are exact too.
        data_members, _ = scan_object(text, start)
        _, inner_start, inner_end = data_members["inner"]
        members = parse_envelope(text, inner_start, inner_end)


# --- verification ----------------------------------------------------------------


class NonceCache:
    """The last NONCE_WINDOW nonces seen by this process."""

    def __init__(self, size=NONCE_WINDOW):
        self.size = size
        self._nonces = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, nonce):
        with self._lock:
            return nonce in self._nonces

    def add(self, nonce):
        with self._lock:
            self._nonces[nonce] = True
            self._nonces.move_to_end(nonce)
            while len(self._nonces) > self.size:
                self._nonces.popitem(last=False)


NONCES = NonceCache()


def verify(layers, now=None):
    """MAC, clock skew and nonce checks for every layer, in that order."""
    if not KEYS:
        raise Rejected(503, "no_key", "no PSK configured")
    now = time.time() if now is None else now
    for _data, raw, mac in layers:
        if not any(
            hmac.compare_digest(hmac.new(k, raw, hashlib.sha256).hexdigest(), mac)
            for k in KEYS
        ):
            raise Rejected(401, "bad_mac", "the message is not authenticated")
    for data, _raw, _mac in layers:
        if abs(data["timestamp"] - now) > MAX_SKEW_SECONDS:
            raise Rejected(401, "stale", "timestamp is more than 10 minutes off")
    for data, _raw, _mac in layers:
        if data["nonce"] in NONCES:
            raise Rejected(409, "replay", "nonce already seen")


def remember(layers):
    """Record the nonces of a committed message."""
    for data, _raw, _mac in layers:
        NONCES.add(data["nonce"])
