"""The dev API server's certificates (``apiserver.tls``): a CA per server, a serving certificate
for the loopback names it signs, and nothing private left on disk or in a repr."""

from __future__ import annotations

import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509

from mmop.devcluster.apiserver import tls


def test_the_server_certificate_names_loopback_and_is_signed_by_the_ca() -> None:
    made = tls.generate((*tls.DEFAULT_HOSTS, "10.0.0.7", "dev.local"))
    ca = x509.load_pem_x509_certificate(made.ca_pem.encode())
    cert = x509.load_pem_x509_certificate(made.cert_pem.encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.7"),
    }
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "dev.local"}
    assert "PRIVATE KEY" in made.key_pem and "PRIVATE KEY" not in repr(made)


def test_each_server_has_its_own_ca() -> None:
    assert tls.generate().ca_pem != tls.generate().ca_pem


def test_the_server_context_leaves_no_key_file_behind() -> None:
    before = set(Path(tempfile.gettempdir()).glob("mmop-apiserver-tls-*"))
    context = tls.server_context(tls.generate())
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert set(Path(tempfile.gettempdir()).glob("mmop-apiserver-tls-*")) == before


def test_the_client_context_checks_names_and_trusts_only_the_ca() -> None:
    made = tls.generate()
    context = tls.client_context(made.ca_pem)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    subjects = [dict(item[0] for item in c["subject"]) for c in context.get_ca_certs()]
    assert subjects == [{"organizationName": "mmop dev", "commonName": "mmop dev API server CA"}]
