"""Helpers shared by the tests and by `bench/`; fixtures stay in `tests/conftest.py`.

- `ci`: skip what this machine lacks, except in CI;
- `webhooks`: a signed WhatsApp webhook, through the test client or over HTTP;
- `outgoing`: what the app sent to MKA1 and to the Graph API stand-in;
- `threads`: calls released at the same moment from threads of their own;
- `stack`: the product as real processes (production profile + sandbox server);
- `invariants`: the exactly-once, in-order check a run of those processes must pass;
- `mka1`: the fake MKA1 server's constants and the requests it should receive;
- `media`: media a user sends, uploaded to the Graph API stand-in, and its webhook message;
- `audit_rows`: filling the audit table fast with raw INSERTs.
"""
