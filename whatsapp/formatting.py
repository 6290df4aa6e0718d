"""LLM Markdown as WhatsApp formatting. WhatsApp knows *bold*, _italic_, ~strike~,
`inline code`, ```monospace blocks```, "- " and "1. " lists and "> " quotes; it shows
Markdown's own markers literally. So `**bold**` becomes `*bold*`, a heading a bold line,
a link "text (url)", bullets "•"; code blocks are kept as they are."""

import re

_FENCE = re.compile(r"^```")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_LINK = re.compile(r"(?<!!)\[([^\]\n]+)\]\((\S+?)\)")
_IMAGE = re.compile(r"!\[([^\]\n]*)\]\((\S+?)\)")


def whatsapp_markdown(text: str) -> str:
    lines, in_code = [], False
    for line in text.split("\n"):
        if _FENCE.match(line.strip()):
            # A fence keeps its opening and closing lines (WhatsApp shows ``` blocks as
            # monospace); the language name after the opening fence is dropped.
            in_code = not in_code
            lines.append("```")
            continue
        if in_code:
            lines.append(line)
            continue
        lines.append(_line(line))
    return "\n".join(lines)


def _line(line: str) -> str:
    if _RULE.match(line):
        return "———"
    heading = _HEADING.match(line)
    if heading:
        return f"*{_inline(heading.group(1), bold_ok=False)}*"
    bullet = _BULLET.match(line)
    if bullet:
        return f"{bullet.group(1)}• {_inline(bullet.group(2))}"
    return _inline(line)


def _inline(text: str, *, bold_ok: bool = True) -> str:
    # Inline code is left alone: WhatsApp shows `code` as it is.
    pieces = re.split(r"(`[^`\n]+`)", text)
    out = []
    for index, piece in enumerate(pieces):
        if index % 2:
            out.append(piece)
            continue
        piece = _IMAGE.sub(lambda m: f"{m.group(1) or 'image'} ({m.group(2)})", piece)
        piece = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})", piece)
        piece = _STRIKE.sub(r"~\1~", piece)
        piece = _ITALIC_STAR.sub(r"_\1_", piece)
        piece = _BOLD.sub(r"*\2*" if bold_ok else r"\2", piece)
        out.append(piece)
    return "".join(out)
