"""The CouchDB API server of the embedded stack: PouchDB Server (npm, package.json beside this module).

The rest of the project speaks only CouchDB's HTTP API, so Apache CouchDB would replace this one
module. The first start ends CouchDB's "admin party" with a password that is never committed.
"""

from __future__ import annotations

from pathlib import Path

from iotpipe import couch
from iotpipe.config import NO_SECRET, Config
from stack.component import Component, generated_secret, host_port, http_ok
from stack.process import Service, StackError

POUCHDB_SERVER = Path(__file__).resolve().parent / "node_modules" / ".bin" / "pouchdb-server"


class CouchDB(Component):
    name = "couchdb"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        host, port = host_port(config.couchdb_url)
        data = self.state / "data" / "couchdb"
        self.process = Service(
            name=self.name,
            command=[str(POUCHDB_SERVER), "--host", host, "--port", str(port), "--dir", str(data)],
            healthy=self.healthy,
            state_dir=self.state,
            cwd=data,
        )

    def missing(self) -> list[str]:
        return [] if POUCHDB_SERVER.exists() else [f"PouchDB Server in {POUCHDB_SERVER.parent}"]

    def start(self) -> None:
        super().start()
        couch.database(self._secured(), create=True)

    def _secured(self) -> Config:
        """The configuration with the admin's password, the admin created if CouchDB has none yet.

        The password is IOTPIPE_COUCHDB_PASSWORD, or else a random one that this first start
        writes to the secret file (mode 0600) where every client reads it.
        """
        config = self.config
        if not config.couchdb_password:
            config = config.replace(couchdb_password=generated_secret(config.couchdb_secret_file))
        anonymous = couch.Database(config.replace(couchdb_password=NO_SECRET))
        admins = anonymous.server_admins()
        if admins is not None and config.couchdb_user not in admins:  # admin party: anyone is admin
            anonymous.add_server_admin(config.couchdb_user, config.couchdb_password)
        if not couch.Database(config).is_server_admin():
            raise StackError(
                f"CouchDB at {config.couchdb_url} refuses admin {config.couchdb_user!r} with the configured password; "
                f"set IOTPIPE_COUCHDB_PASSWORD, or purge the stack to start over (`iotpipe down --purge`)"
            )
        return config

    def healthy(self) -> bool:
        return http_ok(self.config.couchdb_url)

    def detail(self) -> str:
        return f"{self.config.couchdb_url}/{self.config.couchdb_database}"
