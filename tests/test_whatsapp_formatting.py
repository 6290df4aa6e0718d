"""LLM Markdown becomes WhatsApp formatting before a reply is split and sent."""

import pytest

from whatsapp.formatting import whatsapp_markdown


@pytest.mark.parametrize(
    ("markdown", "whatsapp"),
    [
        ("**Paris** is the capital.", "*Paris* is the capital."),
        ("__bold__ and *italic* and ~~gone~~", "*bold* and _italic_ and ~gone~"),
        ("# Heading", "*Heading*"),
        ("### A **strong** heading ###", "*A strong heading*"),
        ("- one\n* two\n+ three", "• one\n• two\n• three"),
        ("  - nested **item**", "  • nested *item*"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("See [the docs](https://docs.test/x).", "See the docs (https://docs.test/x)."),
        ("Use `a**b**c` here", "Use `a**b**c` here"),
        ("---", "———"),
        ("plain text, 2 * 3 = 6", "plain text, 2 * 3 = 6"),
    ],
)
def test_markdown_becomes_whatsapp_formatting(markdown: str, whatsapp: str) -> None:
    assert whatsapp_markdown(markdown) == whatsapp


def test_code_fences_are_kept_readable_and_untouched_inside() -> None:
    text = "Run:\n```python\nx = **y**  # not bold\n- not a bullet\n```\nDone **now**."
    assert whatsapp_markdown(text) == (
        "Run:\n```\nx = **y**  # not bold\n- not a bullet\n```\nDone *now*."
    )
