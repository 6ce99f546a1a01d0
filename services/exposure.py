"""Who can reach the app: the address it binds and whether strangers can reach it (no gradio here).

Safe by default: `python app.py` listens on the loopback address only, so a laptop's app is not
offered to its network. `--host` or GRADIO_SERVER_NAME asks for another address; on a Hugging Face
Space (SPACE_ID set) the app binds 0.0.0.0, as Spaces require. An app on a Space, or bound to anything
but a loopback address, is reachable by strangers: services/access.py then applies the public rules.
"""
from __future__ import annotations

import ipaddress
from typing import Mapping

LOCAL = "127.0.0.1"
ALL = "0.0.0.0"
TRUE = ("1", "true", "yes", "on")


def bind_host(env: Mapping[str, str], cli_host: str | None = None) -> str:
    """The address to listen on: `--host`, else GRADIO_SERVER_NAME, else 0.0.0.0 on a Space, else loopback."""
    for asked in (cli_host, env.get("GRADIO_SERVER_NAME")):
        if asked and asked.strip():
            return asked.strip()
    return ALL if on_space(env) else LOCAL


def on_space(env: Mapping[str, str]) -> bool:
    return bool(env.get("SPACE_ID"))


def is_loopback(host: str) -> bool:
    """127.x.x.x, ::1 and localhost; any other name or address may be reachable from other machines."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost, or "" (all interfaces)


def reachable(host: str, space: bool) -> bool:
    """Can strangers reach an app bound to `host`? Always on a Space (its proxy forwards to everyone)."""
    return space or not is_loopback(host)


def flag(value: str | None) -> bool:
    """An on/off environment variable (VICREG_OPEN_ACCESS=1)."""
    return str(value or "").strip().lower() in TRUE
