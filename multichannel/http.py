"""The HTTP session each outside service's client uses."""

import requests
from requests.adapters import HTTPAdapter


def pooled_session(base_url: str) -> requests.Session:
    """A pooled session without retries of its own (each client decides what to retry,
    from its service's error semantics). `sandbox://` URLs are served in process by the
    sandbox app, so development and tests need no port and no second server."""
    session = requests.Session()
    # Room for every worker thread's connection (a consumer may run 64 or more): a full
    # pool discards connections, and each new one to MKA1 costs a TLS handshake. The pool
    # only ever holds as many as were in use at once.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=256, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.trust_env = False  # no proxy or netrc credentials picked up implicitly
    if base_url.startswith("sandbox://"):
        from multichannel.sandbox.transport import InProcessAdapter

        session.mount("sandbox://", InProcessAdapter())
    return session
