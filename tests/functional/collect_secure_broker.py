"""The collector and the emulator against a broker that requires TLS and a password.

How: a private mosquitto with a TLS listener (a CA and a server certificate made by the
test) and a password file (`mosquitto_passwd`), no anonymous access. The collector gets the
CA with --cafile and its password from CHAINMILL_MQTT_PASSWORD (not the command line); the
emulator's messages arrive and are stored. A client with a wrong password is refused by the
broker.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest
from collect_support import Broker, Process, log, read_stats, recorded, start_collector
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from framework import wait_until
from sqlalchemy import create_engine, func, select

from mes.collector.store import cnc_data

pytestmark = pytest.mark.functional


def make_certificates(directory) -> tuple:
    """A CA and a server certificate for 127.0.0.1 / localhost, as PEM files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chainmill test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def test_collect_over_tls_with_password(harness) -> None:
    d = harness.base_dir
    (d / "broker").mkdir()
    ca, cert, key = make_certificates(d / "broker")
    passwd = d / "broker" / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "plant", "s3cret"], check=True)
    broker = Broker(d / "broker", harness.port_factory(), extra_conf=(
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        f"password_file {passwd}\n"), anonymous=False)
    broker.start()
    db_url = f"sqlite:///{d / 'mes.db'}"
    collector, stats = start_collector(
        d, broker, db_url, ["CNC001", "CNC002"], "--cafile", str(ca), "--username", "plant",
        env={"CHAINMILL_MQTT_PASSWORD": "s3cret"})
    try:
        log.info("the emulator publishes over TLS with the password")
        emulator = Process(d, "emulator", [
            "collect", "emulate", "--broker", broker.address, "--cnc", "CNC001,CNC002",
            "--count", "30", "--rate", "0", "--cafile", str(ca), "--username", "plant",
            "--password", "s3cret", "--record", str(d / "acked.jsonl")])
        assert emulator.wait(60) == 0, emulator.text()
        assert len(recorded(d / "acked.jsonl")) == 30

        def count() -> int:
            with create_engine(db_url).connect() as conn:
                return conn.execute(select(func.count()).select_from(cnc_data)).scalar()
        wait_until(lambda: count() == 30, msg="30 rows stored")
        wait_until(lambda: read_stats(stats).get("stored") == 30,
                   msg="the collector's counters written")  # every second

        log.info("a wrong password is refused by the broker")
        refused = threading.Event()
        intruder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="intruder")
        intruder.tls_set_context(ssl.create_default_context(cafile=str(ca)))
        intruder.username_pw_set("plant", "guess")
        intruder.on_connect = lambda c, u, f, reason, p: reason.is_failure and refused.set()
        intruder.connect("127.0.0.1", broker.port)
        intruder.loop_start()
        try:
            wait_until(refused.is_set, msg="the broker refused the wrong password")
        finally:
            intruder.loop_stop()
        assert "s3cret" not in json.dumps(collector.process.args)
    finally:
        assert collector.stop() == 0, collector.text()
        broker.stop()
