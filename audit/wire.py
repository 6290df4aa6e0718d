"""Bodies as received from outside services: kept as the exact wire text, compacted."""

import json
import re
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class WireObject(Protocol):
    """An object received from an outside service with the body text exactly as it came
    off the wire (the MKA1 client's `Mka1Object` is one)."""

    @property
    def raw(self) -> str: ...


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# A whole string literal (group 1, kept as it is) or whitespace between JSON tokens.
_STRING_OR_GAP = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")|[ \t\n\r]+')


def compact_wire_text(raw: str) -> str:
    """Valid JSON text `raw` with only the whitespace between tokens removed."""
    json.loads(raw)  # refuse anything that is not JSON before trusting the tokenizer
    return _STRING_OR_GAP.sub(lambda match: match.group(1) or "", raw)


def full_response_text(full_response: WireObject | Mapping[str, Any] | None) -> str:
    """The object as received, in compact form; key order and values are kept."""
    if full_response is None:
        return "null"
    if isinstance(full_response, WireObject):
        # Use the wire text rather than the parsed dict so nothing we did to the dict
        # after receiving it can leak into the ledger. Only whitespace is dropped: a
        # json.loads/dumps round trip would rewrite numbers (1e5 -> 100000.0, 1E400 ->
        # Infinity, which is not JSON) and the ledger must keep what MKA1 sent.
        return compact_wire_text(full_response.raw)
    return compact_json(dict(full_response))
