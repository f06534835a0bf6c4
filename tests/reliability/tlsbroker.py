"""A broker secured with TLS and SASL/SCRAM-SHA-512, with a CA and credentials generated per run."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streams.localkafka import LocalKafka, free_port


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"openssl {args[0]} failed: {done.stderr.strip()[-300:]}"
        raise RuntimeError(msg)


def make_pki(directory: Path, keystore_password: str) -> tuple[Path, Path]:
    """A CA and a broker certificate for 127.0.0.1/localhost; returns (ca.pem, broker.p12)."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=crisiswatch-test-ca", "-keyout", "ca.key", "-out", "ca.pem",
             cwd=directory)  # fmt: skip
    (directory / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "broker.key", "-out", "broker.csr", cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "broker.pem",
             cwd=directory)  # fmt: skip
    _openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key",
             "-certfile", "ca.pem", "-name", "broker", "-passout", f"pass:{keystore_password}",
             "-out", "broker.p12", cwd=directory)  # fmt: skip
    return directory / "ca.pem", directory / "broker.p12"


@dataclass
class SecureBroker:
    """A running SASL_SSL-only broker and the credentials to reach it."""

    kafka: LocalKafka
    bootstrap: str
    cafile: Path
    username: str
    password: str
    broker_password: str
    keystore_password: str

    def client_env(self, password: str | None = None) -> dict[str, str]:
        return {
            "CRISISWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "CRISISWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "CRISISWATCH_KAFKA_SASL_USERNAME": self.username,
            "CRISISWATCH_KAFKA_SASL_PASSWORD": self.password if password is None else password,
            "CRISISWATCH_KAFKA_SSL_CAFILE": str(self.cafile),
        }

    def secrets(self) -> list[str]:
        return [self.password, self.broker_password, self.keystore_password]


def start_secure_broker(directory: Path) -> SecureBroker:
    keystore_password = "ks-" + secrets.token_urlsafe(12)
    broker_password = "bk-" + secrets.token_urlsafe(12)
    password = "cw-" + secrets.token_urlsafe(12)
    cafile, keystore = make_pki(directory / "pki", keystore_password)
    port = free_port()
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="broker" password="{broker_password}";'
    )
    props = {
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(keystore),
        "ssl.keystore.password": keystore_password,
        "ssl.key.password": keystore_password,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(cafile),
        "ssl.endpoint.identification.algorithm": "https",
    }
    kafka = LocalKafka(
        directory / "kafka",
        port=port,
        listeners=f"SASL_SSL://127.0.0.1:{port}",
        extra_properties=props,
        format_args=(
            "--add-scram",
            f"SCRAM-SHA-512=[name=broker,password={broker_password}]",
            "--add-scram",
            f"SCRAM-SHA-512=[name=crisiswatch,password={password}]",
        ),
    )
    bootstrap = kafka.up()
    return SecureBroker(
        kafka, bootstrap, cafile, "crisiswatch", password, broker_password, keystore_password
    )
