"""Renew TorchServe's inference and management keys before they expire.

TorchServe 0.12 refuses a key once ``token_expiration_min`` has passed since it was issued, and
issues a new one only when asked through its token API. The renewer reads each key's expiry from
key_file.json and asks for a new key when half of the lifetime the key had when first seen has
passed, so a key never expires under the pipeline whatever the configured lifetime, and a restarted
TorchServe (new keys, new expiries) needs nothing special. The supervisor of the embedded stack runs
it in a thread; in Kubernetes a sidecar of the TorchServe pod runs ``python -m stack.renew_keys``.
``--check`` exits 1 when a key of the file has expired: the sidecar's liveness probe.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from iotpipe.config import Config
from iotpipe.service import configure_logging, stop_on_signals
from iotpipe.torchserve import KeyFileError, ManagementClient, ManagementError, key_expirations

log = logging.getLogger("iotpipe.renew_keys")

CHECK_EVERY_S = 1.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class KeyRenewer:
    """Decides when each key is due and renews it through TorchServe's token API."""

    def __init__(self, config: Config, clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config
        self.clock = clock
        self.management = ManagementClient(config)
        self._renew_at: dict[str, tuple[str, datetime]] = {}  # api -> (key, when to renew it)

    def due(self, expirations: dict[str, tuple[str, datetime]]) -> list[str]:
        """The keys to renew now; a key seen for the first time is due at half its remaining life."""
        now = self.clock()
        due = []
        for api, (key, expires) in expirations.items():
            if self._renew_at.get(api, ("",))[0] != key:
                self._renew_at[api] = (key, now + (expires - now) / 2)
            if now >= self._renew_at[api][1]:
                due.append(api)
        return due

    def renew_due(self) -> list[str]:
        """Renew the keys that are due; the ones renewed. TorchServe away: nothing now, next time."""
        try:
            due = self.due(key_expirations(self.config.key_file))
        except KeyFileError as error:
            log.debug("no keys to renew yet: %s", error)
            return []
        renewed = []
        for api in due:
            try:
                self.management.renew_key(api)
            except (ManagementError, KeyFileError) as error:
                log.warning("renewing TorchServe's %s key failed, next try in %.0f s: %s", api, CHECK_EVERY_S, error)
                continue
            log.info("renewed TorchServe's %s key", api)
            renewed.append(api)
        return renewed

    def run(self, stopping: threading.Event) -> None:
        log.info("renewing the keys of %s at half their life", self.config.key_file)
        while not stopping.is_set():
            self.renew_due()
            stopping.wait(CHECK_EVERY_S)


def expired_keys(config: Config, now: datetime) -> list[str]:
    """The keys of the key file that have expired (none while there is no key file)."""
    try:
        expirations = key_expirations(config.key_file)
    except KeyFileError:
        return []
    return [api for api, (_, expires) in expirations.items() if expires <= now]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.renew_keys", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a key of the key file has expired")
    args = parser.parse_args(argv)
    configure_logging()
    config = Config.load()
    if args.check:
        expired = expired_keys(config, utc_now())
        if expired:
            print(f"renew-keys: the {' and '.join(expired)} key of {config.key_file} expired", file=sys.stderr)
        return 1 if expired else 0
    stopping = threading.Event()
    stop_on_signals(stopping)
    KeyRenewer(config).run(stopping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
