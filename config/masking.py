"""What counts as a secret in a configuration, and how it is hidden wherever a value is shown:
`sunpm config show`, every problem line (the CLI, the gateway's log, which is uploaded, the web
UI, command results)."""

from __future__ import annotations

import re
from typing import Final

#: The password of a URL's userinfo (`https://user:pw@host/`): `HTTP_Url` refuses one, but the
#: refused value is still quoted in its warning, and an unknown key may hold any URL.
_URL_PASSWORD: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/?#@\s:']*:)[^/?#\s']*@")


def url_password_masked(text: str) -> str:
    return _URL_PASSWORD.sub(r"\1***@", text)


#: Parts of a key name that say its value is a secret; matched in any case, so a misspelt or
#: unknown key (`FTP2_Pasword`, `MQTT_Passwd`, `API_Token`) is hidden too.
_SECRET_PARTS: Final = ("passw", "pasw", "passphrase", "pwd", "secret", "token", "hash",
                        "credential")
_QUOTED: Final = re.compile(r"'[^']*'")


def is_secret(key: str) -> bool:
    low = key.lower()
    last = re.split(r"[_\-.]", low)[-1]
    return (any(part in low for part in _SECRET_PARTS) or low.endswith("pin")
            or last in ("pass", "pw") or _within_two_edits(last, "password"))


def _within_two_edits(a: str, b: str) -> bool:
    """Levenshtein distance of at most 2 (`pssword`, `passowrd`)."""
    if abs(len(a) - len(b)) > 2:
        return False
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1] <= 2


def masked(field: str, text: str) -> str:
    """`text` (a line about `field`) with the quoted values hidden when `field` looks like a
    secret, and any URL's password hidden whatever the field."""
    return _QUOTED.sub("'***'", text) if is_secret(field) else url_password_masked(text)
