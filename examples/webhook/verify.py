#!/usr/bin/env python3
"""Verifies the signature of an ssehub webhook request (docs/WEBHOOKS.md), standard library only.

The header is `Ssehub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
A request is genuine when its timestamp is within `tolerance` seconds of the receiver's clock
(so a captured request cannot be replayed later) and one of its `v1` values is the HMAC of the
timestamp, a dot and the raw body bytes, compared in constant time. Verify the body exactly as
received, before parsing it as JSON.

In a receiver:

    from verify import verify_signature
    if not verify_signature(secret, request.headers["Ssehub-Signature"], raw_body):
        return 400

From the command line (the body on standard input; exit status 0 if genuine, 1 if not):

    python3 verify.py --secret "$SECRET" --header "t=...,v1=..." < body.json
"""

import argparse
import hashlib
import hmac
import sys
import time

DEFAULT_TOLERANCE_SECONDS = 300


def verify_signature(secret, header, body, tolerance=DEFAULT_TOLERANCE_SECONDS, now=None):
    """True when `header` signs `body` (bytes) with `secret` (str or bytes) within `tolerance`."""
    if isinstance(secret, str):
        secret = secret.encode()
    timestamp = None
    signatures = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if not value.isdigit():
                return False
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    expected = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    # compare_digest takes the same time wherever the strings differ.
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret", required=True, help="the hub's --webhook-secret")
    parser.add_argument("--header", required=True, help="the Ssehub-Signature header's value")
    parser.add_argument("--tolerance", type=int, default=DEFAULT_TOLERANCE_SECONDS,
                        help="seconds the timestamp may be away from now (default 300)")
    args = parser.parse_args()
    body = sys.stdin.buffer.read()
    if verify_signature(args.secret, args.header, body, args.tolerance):
        print("valid")
        return 0
    print("invalid", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
