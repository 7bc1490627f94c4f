"""The cluster's certificates, made with openssl: one CA, the API server's serving certificate, one
client certificate per identity (render.IDENTITIES), and the service-account signing key."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cluster.render import IDENTITIES, apiserver_sans

DAYS = "3650"


def openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def subject(common_name: str, organization: str) -> str:
    return f"/CN={common_name}" + (f"/O={organization}" if organization else "")


def issue(pki: Path, name: str, common_name: str, organization: str, sans: list[str], usage: str) -> None:
    key, crt, csr, ext = (pki / f"{name}.{suffix}" for suffix in ("key", "crt", "csr", "ext"))
    if crt.exists():
        return
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", subject(common_name, organization))  # fmt: skip
    lines = [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    ext.write_text("\n".join(lines) + "\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
            "-CAcreateserial", "-days", DAYS, "-sha256", "-extfile", str(ext), "-out", str(crt))  # fmt: skip
    csr.unlink()
    ext.unlink()


def ensure(pki: Path) -> None:
    """Make whatever is missing; an existing file is kept (`up` after `up` changes nothing)."""
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (pki / "ca.crt").exists():
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"), "-days", DAYS,
                "-subj", "/CN=iotpipe-cluster-ca")  # fmt: skip
    issue(pki, "apiserver", "kube-apiserver", "", apiserver_sans(), "serverAuth")
    for identity, (common_name, organization) in IDENTITIES.items():
        issue(pki, identity, common_name, organization, [], "clientAuth")
    if not (pki / "sa.key").exists():
        openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
