"""RFC 3161 trusted time-stamps over a checkpoint's signed note: the time-stamp
authority (AUDIT_TSA_URL) signs that the note's SHA-256 existed at a time, which a
checkpoint signed with our own key cannot prove. rfc3161-client builds the request and
verifies the answer; requests sends it."""

from datetime import datetime
from pathlib import Path

import requests
from cryptography import x509
from django.conf import settings
from rfc3161_client import (
    HashAlgorithm,
    TimestampRequestBuilder,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)


class TimestampError(Exception):
    """No valid time-stamp (the TSA unreachable, refusing, or answering wrongly)."""


def tsa_roots(path: str | None = None) -> list[x509.Certificate]:
    try:
        pem = Path(path or settings.AUDIT_TSA_CA_FILE).read_bytes()
        return x509.load_pem_x509_certificates(pem)
    except (OSError, ValueError) as exc:
        raise TimestampError(f"cannot read the TSA's root certificates: {exc}") from None


def timestamp_verify(token: bytes, data: bytes, roots: list[x509.Certificate]) -> datetime:
    """The time the TSA vouches `data` existed at, once its signature chains to `roots`
    and its imprint is SHA-256(data)."""
    try:
        response = decode_timestamp_response(token)
        builder = VerifierBuilder()
        for root in roots:
            builder = builder.add_root_certificate(root)
        builder.build().verify_message(response, data)
    except (ValueError, VerificationError) as exc:
        raise TimestampError(f"the time-stamp token does not verify: {exc}") from None
    return response.tst_info.gen_time


def timestamp_fetch(data: bytes, *, url: str | None = None) -> bytes:
    """Ask the TSA to time-stamp `data`; its DER TimeStampResp, verified (nonce and
    imprint of this request, signature to AUDIT_TSA_CA_FILE) before it is returned."""
    request = TimestampRequestBuilder().data(data).hash_algorithm(HashAlgorithm.SHA256).build()
    try:
        answer = requests.post(
            url or settings.AUDIT_TSA_URL,
            data=request.as_bytes(),
            headers={"Content-Type": "application/timestamp-query"},
            timeout=(5, settings.AUDIT_PUBLISH_TIMEOUT),
        )
    except requests.RequestException as exc:
        raise TimestampError(f"TSA unreachable ({type(exc).__name__})") from None
    if answer.status_code != 200:
        raise TimestampError(f"TSA answered HTTP {answer.status_code}")
    try:
        response = decode_timestamp_response(answer.content)
        builder = VerifierBuilder.from_request(request)
        for root in tsa_roots():
            builder = builder.add_root_certificate(root)
        builder.build().verify_message(response, data)
    except (ValueError, VerificationError) as exc:
        raise TimestampError(f"the TSA's answer does not verify: {exc}") from None
    return answer.content
