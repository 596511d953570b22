"""The gateway's messages, each as plain text and HTML. Values are escaped for HTML and stripped of line breaks.

``redact_subject`` keeps what kind of message a delivered outbox row was, without the values (codes) filled into it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from string import Template

from auth_api.core.errors import InvalidInput


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


_TEMPLATES: dict[str, tuple[str, str, str]] = {
    "verify_email": (
        "Your mlstack verification code: $code",
        "Hello $username,\n\nyour verification code is $code. It expires in $minutes minutes.\n\n"
        "Enter it with POST /api/v1/auth/verify-email. If you did not register, ignore this message.\n",
        "<p>Hello $username,</p><p>your verification code is <b>$code</b>. It expires in $minutes minutes.</p>"
        "<p>If you did not register, ignore this message.</p>",
    ),
    "password_reset": (
        "Your mlstack password reset code: $code",
        "Hello $username,\n\nyour password reset code is $code. It expires in $minutes minutes and works once.\n\n"
        "Enter it with POST /api/v1/auth/password/reset. If you did not ask for it, ignore this message: your password "
        "stays as it is.\n",
        "<p>Hello $username,</p><p>your password reset code is <b>$code</b>. It expires in $minutes minutes and works "
        "once.</p><p>If you did not ask for it, ignore this message: your password stays as it is.</p>",
    ),
}


def _one_line(v: object) -> str:
    # Nothing a user typed may start a new header or line, whatever later code does with it.
    return " ".join(str(v).split())


def render(kind: str, **values: object) -> Rendered:
    try:
        subject, text, body_html = _TEMPLATES[kind]
    except KeyError:
        raise InvalidInput(f"unknown message template '{kind}'") from None
    plain = {k: _one_line(v) for k, v in values.items()}
    escaped = {k: html.escape(v) for k, v in plain.items()}
    return Rendered(subject=_one_line(Template(subject).substitute(plain))[:200], text=Template(text).substitute(plain),
                    html=Template(body_html).substitute(escaped))


REDACTED = "[removed after delivery]"
_PLACEHOLDER = re.compile(r"\$\w+")


def redact_subject(subject: str) -> str:
    """The subject with every filled-in value replaced by REDACTED (e.g. 'Your mlstack verification code: [removed
    after delivery]'); just REDACTED when it matches no template."""
    for template, _, _ in _TEMPLATES.values():
        literals = _PLACEHOLDER.split(template)
        if re.fullmatch("(.*)".join(map(re.escape, literals)), subject, re.S):
            return REDACTED.join(literals)[:200]
    return REDACTED
