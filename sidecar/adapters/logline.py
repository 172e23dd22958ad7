"""One log record, one line: nothing a client sends can forge a line of the log.

Messages quote values that came from outside (a principal's name, an address,
an error's text); a newline or a carriage return among them would start what
reads as a record of its own. :class:`OneLineFormatter` escapes every character
that is not printable in the message, and indents the lines a traceback adds,
so a line that starts at the left margin is always a record the sidecar wrote.
"""

from __future__ import annotations

import logging


def printable(text: str) -> str:
    """``text`` with each character that is not printable (control characters, line and
    paragraph separators, bidirectional overrides) escaped as ``\\xNN``/``\\uNNNN``."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class OneLineFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        head, *tail = super().format(record).split("\n")
        return "\n".join([head, *(f"    {printable(line)}" for line in tail)])
