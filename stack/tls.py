"""A private certificate authority and the broker's TLS key store, for the SASL_SSL listener.

Made with openssl on the first `iotpipe up` (or `make certs`) under .run/kafka/tls/, never
committed: ca.crt is what clients trust (IOTPIPE_SSL_CAFILE), broker.p12 the broker's key store.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from stack.process import StackError

DAYS = 825


def ensure_certificates(folder: Path) -> tuple[Path, Path, str]:
    """(ca.crt, broker.p12, key store password), made where missing."""
    ca, keystore, password_file = folder / "ca.crt", folder / "broker.p12", folder / "broker.p12.password"
    if ca.exists() and keystore.exists() and password_file.exists():
        return ca, keystore, password_file.read_text()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_urlsafe(18)
    (folder / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for command in (
        f"req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days {DAYS} -subj /CN=iotpipe-test-ca",
        "req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj /CN=localhost",
        f"x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out broker.crt -days {DAYS} "
        "-extfile san.cnf",
        f"pkcs12 -export -in broker.crt -inkey broker.key -certfile ca.crt -out broker.p12 -passout pass:{password}",
    ):
        result = subprocess.run(["openssl", *command.split()], cwd=folder, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"openssl {command.split()[0]} failed in {folder}: {result.stderr.strip()}")
    password_file.write_text(password)
    for private in (folder / "ca.key", folder / "broker.key", password_file, keystore):
        private.chmod(0o600)
    return ca, keystore, password


if __name__ == "__main__":
    import sys

    print(ensure_certificates(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".run/kafka/tls"))[0])
