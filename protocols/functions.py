"""Deterministic Python functions called by the reference protocols through `.function`.

Each is a pure function of its arguments (no clock, no randomness, no process-salted ``hash()``), so
every node, every run and every rewritten program computes the same values. The cryptography is a
cheap stand-in for the paper's signatures: HMAC-SHA256 under a fixed demo key, with the signer's
address mixed in so that each node has its own "key". It authenticates nothing in a real deployment.

Declared in a program as, for example::

    .function sign(signer, msg) -> (sig) = "protocols.functions:sign"
    .function verify(signer, msg, sig) -> () = "protocols.functions:verify"
    .function hash(value) -> (digest) = "protocols.functions:hash"
"""

from __future__ import annotations

import hashlib
import hmac

DEMO_KEY = b"hydrodeploy demo signing key (not a secret)"
"""The fixed key of every demo signature."""

SIG_HEX = 32
"""Signatures are 16 bytes, shown as 32 hex digits."""


def _bytes(value: object) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else repr(value).encode("utf-8")


def sign(signer: str, msg: object) -> str:
    """The signature of ``msg`` by the node at address ``signer`` (hex string)."""
    mac = hmac.new(DEMO_KEY, _bytes(signer) + b"\x00" + _bytes(msg), hashlib.sha256)
    return mac.hexdigest()[:SIG_HEX]


def verify(signer: str, msg: object, sig: str) -> bool:
    """Whether ``sig`` is ``signer``'s signature of ``msg`` (a predicate: no outputs)."""
    return isinstance(sig, str) and hmac.compare_digest(sign(signer, msg), sig)


def hash(value: object) -> int:  # shadows the builtin on purpose: the paper calls it hash
    """A 32-bit digest of ``value`` (an integer, so that partitioning on it is ``digest mod N``)."""
    return int.from_bytes(hashlib.blake2b(_bytes(value), digest_size=4).digest(), "big")


WEAK_BUCKETS = 8


def weak_hash(value: object) -> int:
    """``hash`` folded into 8 buckets: a drop-in replacement for ``hash`` that makes collisions
    common, to exercise collision counting and inconsistency detection."""
    return hash(value) % WEAK_BUCKETS


def cert_share(sig: str) -> int:
    """The share of one signature in a certificate: its first 48 bits as an integer.

    The language has no aggregate that concatenates strings, so a certificate over a set of
    signatures is ``sum`` of their shares (order-independent, and recomputable by anyone who can
    recompute the signatures).
    """
    return int(sig[:12], 16)
