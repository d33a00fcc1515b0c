"""What of a call's prompt and answer reaches disk, and in what form (a feature's ``retention``).

``none`` stores nothing; ``redacted`` stores them with every PII entity the detector finds replaced by
its type (``[EMAIL]``); ``encrypted`` stores them whole under AES-256-GCM (``cryptography``'s AESGCM),
with a key that lives only in the environment and the trace id as associated data, so a sealed blob
copied onto another trace's row does not open. A stored blob reads ``aesgcm:<key id>:<base64>``; the key
id (8 hex digits of the key's SHA-256) picks among the keys given, which is how keys rotate.

Error messages and trace events are free text that may quote a request (a provider's 400, a schema
error naming a value): they are always redacted, whatever the mode.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ShipyardError
from ..guard.pii import ENTITIES, Redactor

MODES = ("none", "redacted", "encrypted")
_PREFIX = "aesgcm:"
_REDACTOR = Redactor(dict.fromkeys(ENTITIES, "redact"), hash_key=b"")  # every entity, to its type


class ContentKeyError(ShipyardError):
    """The encryption key is missing, malformed, or not the one a blob was sealed with."""

    code = "content_key_error"


def redact_text(text: str) -> str:
    redacted, _, _ = _REDACTOR.redact(text)
    return redacted


def scrub(value: Any, depth: int = 0) -> Any:
    """``value`` with every string in it redacted, keys and long numbers too (a card sent as a number, an
email used as a key). Below 32
    levels, what is left becomes one redacted text of its strings: a hostile, deeply nested input costs
    no recursion (and orjson, which refuses to encode past 255 levels, can still write it)."""
    if isinstance(value, str):
        return redact_text(value) if len(value) >= 5 else value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**8:
        text = str(value)  # a card, a phone or an SSN given as a number
        redacted = redact_text(text)
        return redacted if redacted != text else value
    if depth >= 32 and isinstance(value, list | dict):
        return redact_text(" ".join(_strings(value)))
    if isinstance(value, list):
        return [scrub(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {(redact_text(k) if isinstance(k, str) and len(k) >= 5 else k): scrub(v, depth + 1)
                for k, v in value.items()}
    return value


def _strings(value: Any) -> list[str]:
    """Every scalar under ``value`` as text, depth first, without recursion."""
    out: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
        elif item is not None:
            out.append(str(item))
    return out


def _dumps(content: Any) -> bytes:
    """JSON of what a caller passed (the Python API takes anything: a set, bytes become text)."""
    try:
        return orjson.dumps(content, default=str)
    except TypeError:  # nested deeper than orjson encodes: keep the text, flattened below 32 levels
        return orjson.dumps(_flatten(content), default=str)


def _flatten(value: Any, depth: int = 0) -> Any:
    if depth >= 32 and isinstance(value, list | dict):
        return " ".join(_strings(value))
    if isinstance(value, list):
        return [_flatten(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: _flatten(v, depth + 1) for k, v in value.items()}
    return value


def parse_keys(raw: str, env: str) -> list[bytes]:
    """``NEW[,OLD...]``: base64 keys of 16, 24 or 32 bytes. ContentKeyError says what is wrong and how to
    make a good one."""
    keys = []
    for i, part in enumerate(p.strip() for p in raw.split(",")):
        try:
            key = base64.b64decode(part, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) not in (16, 24, 32):
            raise ContentKeyError(
                f"{env}: key {i + 1} is not the base64 of a 16, 24 or 32 byte key; make one with "
                "`shipyard retention keygen` (or: openssl rand -base64 32)"
            )
        keys.append(key)
    return keys


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class Sealer:
    """Seals a call's content for storage and opens it again (``shipyard trace --decrypt``)."""

    def __init__(self, keys: list[bytes] | None = None) -> None:
        self.keys = {key_id(k): AESGCM(k) for k in keys or ()}
        self.current = key_id(keys[0]) if keys else None

    @classmethod
    def from_env(cls, env: str, *, required: bool) -> Sealer:
        raw = os.environ.get(env, "").strip()
        if not raw:
            if required:
                raise ContentKeyError(
                    f"store_content: encrypted needs a key in the environment variable {env}; make one "
                    f"with `shipyard retention keygen` and export {env}=<it> (keep it out of the config "
                    "file and away from the database)"
                )
            return cls()
        return cls(parse_keys(raw, env))

    def seal(self, content: Any, mode: str, trace_id: str) -> str | None:
        if content is None or mode == "none":
            return None
        if mode == "redacted":
            return _dumps(scrub(orjson.loads(_dumps(content)))).decode()
        if self.current is None:
            raise ContentKeyError("no content key to encrypt with")
        nonce = os.urandom(12)
        sealed = self.keys[self.current].encrypt(nonce, _dumps(content), trace_id.encode())
        return f"{_PREFIX}{self.current}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, stored: str | None, trace_id: str) -> Any:
        """The content as it was given to ``seal``: redacted content parses, encrypted content decrypts
        with the key it names (ContentKeyError when that key is not given or the blob was altered)."""
        if stored is None:
            return None
        if not stored.startswith(_PREFIX):
            return orjson.loads(stored)
        _, kid, blob = stored.split(":", 2)
        aead = self.keys.get(kid)
        if aead is None:
            raise ContentKeyError(
                f"trace {trace_id} was encrypted with key {kid}, which is not among the keys given"
                + (f" ({', '.join(self.keys)})" if self.keys else " (none)")
            )
        try:
            raw = base64.b64decode(blob, validate=True)
            return orjson.loads(aead.decrypt(raw[:12], raw[12:], trace_id.encode()))
        except Exception as exc:  # InvalidTag (wrong key, altered blob), bad base64, a truncated blob
            raise ContentKeyError(f"trace {trace_id}: the stored content does not open (altered, or moved "
                                  "from another trace)") from exc

    @staticmethod
    def is_sealed(stored: str | None) -> bool:
        return isinstance(stored, str) and stored.startswith(_PREFIX)


SUBJECT_KEY_ENV = "SHIPYARD_SUBJECT_KEY"


def subject_digest(subject: str) -> str:
    """What the store keeps of a subject id: a digest, so that the id (often an email or a customer
    number) never reaches disk, while ``shipyard forget --subject ID`` finds the same rows. Keyed (HMAC)
    with ``$SHIPYARD_SUBJECT_KEY`` when it is set, so that a guessed id cannot be checked against the
    table or the audit log without the key; set it before the first call (changing it orphans the
    digests made before)."""
    key = os.environ.get(SUBJECT_KEY_ENV, "").encode()
    if key:
        return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()[:40]
    return hashlib.sha256(b"shipyard-subject\x00" + subject.encode()).hexdigest()[:40]
