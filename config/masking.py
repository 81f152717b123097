"""What counts as a secret in a configuration, and how it is hidden wherever a value is shown:
`sunpm config show`, every problem line (the CLI, the gateway's log, which is uploaded, the web
UI, command results)."""

from __future__ import annotations

import re
from typing import Final

from config._distance import edit_distance

#: A URL's userinfo with a password, from just after `://`: `user:` then the password and `@`.
_USERINFO: Final = re.compile(r"[^/?#@\s:']*:[^/?#\s']*@")


def url_passwords_masked(text: str) -> str:
    """Every URL's password as `***` (`https://user:***@host/`). Linear in the text: a pattern
    searched from every word start took minutes on a value of a megabyte like `a.a.a.`."""
    if "://" not in text:
        return text
    out: list[str] = []
    last = 0
    for sep in re.finditer("://", text):
        if sep.start() < last:
            continue
        userinfo = _USERINFO.match(text, sep.end())
        if userinfo is not None:
            colon = text.index(":", sep.end())
            out += [text[last:colon + 1], "***@"]
            last = userinfo.end()
    return "".join(out) + text[last:]


#: Parts of a key name that say its value is a secret; matched in any case, so a misspelt or
#: unknown key (`FTP2_Pasword`, `MQTT_Passwd`, `API_Token`) is hidden too.
_SECRET_PARTS: Final = ("passw", "pasw", "passphrase", "pwd", "secret", "token", "hash",
                        "credential")
_QUOTED: Final = re.compile(r"'[^']*'")


def is_secret(key: str) -> bool:
    low = key.lower()
    last = re.split(r"[_\-.]", low)[-1]
    return (any(part in low for part in _SECRET_PARTS) or low.endswith("pin")
            or last in ("pass", "pw") or edit_distance(last, "password") <= 2)


def masked(field: str, text: str) -> str:
    """`text` (a line about `field`) with the quoted values hidden when `field` looks like a
    secret, and any URL's password hidden whatever the field."""
    return _QUOTED.sub("'***'", text) if is_secret(field) else url_passwords_masked(text)


def ini_secrets_masked(text: str) -> str:
    """A config.ini with the value of every `KEY=value` line whose key looks like a secret (the
    password hash too) as `***`: the file as a debug archive carries it, to a browser and to
    the server's /LOG. An empty value stays empty (not set)."""
    out = []
    for line in text.splitlines(keepends=True):
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith(("#", ";")) and value.strip() and \
                is_secret(key.strip()):
            end = line[len(line.rstrip("\r\n")):]
            line = f"{key}=***{end}"
        out.append(line)
    return "".join(out)
