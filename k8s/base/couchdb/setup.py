"""Make the consumer's CouchDB user: the results database, a user in _users, and the database's
_security naming that user (admin of that database only; members likewise, so nobody else reads it).

Run as the init container of the consumer pods with the server admin's credentials; each step is
idempotent (a second run sets the same password and security again, so a rotated Secret applies).
Standard library only: it runs in any image with Python. Settings: COUCHDB_URL, COUCHDB_DATABASE,
COUCHDB_ADMIN_USER, COUCHDB_ADMIN_PASSWORD, COUCHDB_CONSUMER_USER, COUCHDB_CONSUMER_PASSWORD.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote

WAIT_S = 300


def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """(status, JSON answer) of one request to CouchDB as the server admin."""
    credentials = f"{os.environ['COUCHDB_ADMIN_USER']}:{os.environ['COUCHDB_ADMIN_PASSWORD']}"
    request = urllib.request.Request(
        f"{os.environ['COUCHDB_URL'].rstrip('/')}/{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": f"Basic {base64.b64encode(credentials.encode()).decode()}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_for_couchdb() -> None:
    """Until the server's welcome answers (GET /: CouchDB and PouchDB Server both have it)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            status, answer = call("GET", "")
        except OSError as error:
            status, answer = 0, {"error": str(error)}
        if status == 200:
            return
        if time.monotonic() > deadline:
            sys.exit(f"CouchDB at {os.environ['COUCHDB_URL']} did not answer in {WAIT_S} s: {status} {answer}")
        time.sleep(2)


def ensure_database(name: str) -> None:
    status, answer = call("PUT", quote(name, safe=""))
    if status not in (201, 202, 412):  # 412: it exists
        sys.exit(f"creating database {name} failed: {status} {answer}; check the admin credentials")


def ensure_user(name: str, password: str) -> None:
    """The user with this password (set again each time: the Secret is the truth)."""
    path = f"_users/{quote('org.couchdb.user:' + name, safe='')}"
    for _ in range(5):  # two consumer pods may write at once: a 409 reads the new revision again
        status, current = call("GET", path)
        document = {"_id": f"org.couchdb.user:{name}", "name": name, "type": "user", "roles": [], "password": password}
        if status == 200:
            document["_rev"] = current["_rev"]
        status, answer = call("PUT", path, document)
        if status in (201, 202):
            return
        if status != 409:
            sys.exit(f"creating CouchDB user {name} failed: {status} {answer}")
    sys.exit(f"creating CouchDB user {name}: conflicts did not stop")


def restrict(database: str, user: str) -> None:
    """The same _security as iotpipe.couch.Database.restrict_to writes: this user and server admins only."""
    members = {"names": [user], "roles": ["_admin"]}
    status, answer = call("PUT", f"{quote(database, safe='')}/_security", {"admins": members, "members": members})
    if status != 200:
        sys.exit(f"setting the security of {database} failed: {status} {answer}")


def main() -> None:
    database, user = os.environ["COUCHDB_DATABASE"], os.environ["COUCHDB_CONSUMER_USER"]
    wait_for_couchdb()
    ensure_database("_users")
    ensure_database(database)
    ensure_user(user, os.environ["COUCHDB_CONSUMER_PASSWORD"])
    restrict(database, user)
    print(f"CouchDB user {user} may use {database} and nothing else")


if __name__ == "__main__":
    main()
