"""The national operator whitelist: parsing, writing, refusal of hostile XML, DNs."""

from __future__ import annotations

import hashlib
import string
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from directory.whitelist_xml import (
    NAMESPACE,
    Whitelist,
    WhitelistEntry,
    WhitelistError,
    dn_matches,
    normalise_domain,
    parse_dn,
    parse_whitelist,
    write_whitelist,
)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "listeblanchemssante.xml"
CHU_DN = "CN=mx2.chu-exemple.test,OU=0002 123456789,O=CHU EXEMPLE,L=PARIS,ST=Paris (75),C=FR"


@pytest.fixture
def fixture_bytes() -> bytes:
    return FIXTURE.read_bytes()


def document(*domains: str, generated: str = "2026-11-23T00:00:00") -> bytes:
    body = "".join(f"<Domaine>{d}</Domaine>" for d in domains)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<ListeBlancheMSSante xmlns="{NAMESPACE}">'
        f"<DateDeGeneration>{generated}</DateDeGeneration>"
        f"<ListeDomaines>{body}</ListeDomaines></ListeBlancheMSSante>"
    ).encode()


def domain(
    name: str | None = "op.example.test",
    dn: str | None = "CN=op.example.test,O=Op,C=FR",
    updated: str | None = "2026-11-01T00:00:00",
) -> str:
    parts = []
    if name is not None:
        parts.append(f"<Nom>{name}</Nom>")
    parts.append("<Description>Opérateur</Description>")
    if dn is not None:
        parts.append(f"<DNCertificatOperateur>{dn}</DNCertificatOperateur>")
    parts.append("<ResponsableContact>r@op.example.test</ResponsableContact>")
    parts.append("<SupportContact>s@op.example.test</SupportContact>")
    if updated is not None:
        parts.append(f"<DateMAJ>{updated}</DateMAJ>")
    return "".join(parts)


# --- The fixture --------------------------------------------------------------------


def test_fixture_yields_generation_date_and_every_domain_entry(fixture_bytes: bytes) -> None:
    wl = parse_whitelist(fixture_bytes)

    assert wl.generated_at == datetime(2026, 11, 23)
    assert [e.domain for e in wl.entries] == [
        "chu-exemple.test",
        "labo-exemple.test",
        "chu-exemple.test",
        "medecin.exemple-operateur.test",
    ]
    first = wl.entries[0]
    assert first == WhitelistEntry(
        domain="chu-exemple.test",
        description="Opérateur de test 0",
        certificate_dn=CHU_DN,
        responsible_contact="responsable@chu-exemple.test",
        support_contact="support@chu-exemple.test",
        updated_at=datetime(2026, 11, 1),
    )


def test_fixture_domain_listed_twice_keeps_both_entries_and_one_unique_dn(
    fixture_bytes: bytes,
) -> None:
    # The sample lists chu-exemple.test twice, but with the very same DN both times.
    wl = parse_whitelist(fixture_bytes)

    chu = [e for e in wl.entries if e.domain == "chu-exemple.test"]
    assert [e.description for e in chu] == ["Opérateur de test 0", "Opérateur de test 2"]
    assert wl.domains()["chu-exemple.test"] == (CHU_DN,)
    assert len(wl.domains()) == 3


def test_domain_listed_with_two_certificates_maps_to_both_dns_sorted(
    fixture_bytes: bytes,
) -> None:
    first, rest = fixture_bytes.split(b"CN=mx2.chu-exemple.test", 1)
    two_dns = first + b"CN=mx1.chu-exemple.test" + rest

    wl = parse_whitelist(two_dns)

    assert wl.domains()["chu-exemple.test"] == (
        CHU_DN.replace("mx2", "mx1"),
        CHU_DN,
    )
    assert wl.domains()["labo-exemple.test"] == (
        "CN=labo-exemple.test,OU=Operateur 1,O=Operateur Test,C=FR",
    )


# --- Writing ------------------------------------------------------------------------


def test_written_fixture_parses_back_to_the_same_whitelist(fixture_bytes: bytes) -> None:
    wl = parse_whitelist(fixture_bytes)

    written = write_whitelist(wl)

    assert parse_whitelist(written) == wl
    assert written.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert f'<ListeBlancheMSSante xmlns="{NAMESPACE}">'.encode() in written
    assert "Opérateur de test 0".encode() in written


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    max_size=30,
).map(str.strip)
_label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=12)
_domains = (
    st.lists(_label, min_size=2, max_size=4)
    .map(".".join)
    .filter(lambda d: not d.rsplit(".", 1)[-1].isdigit())
)
_dn_values = st.text(alphabet=string.ascii_letters + string.digits + " ,+=#\\é", max_size=20)
_zones = st.none() | st.sampled_from(
    [UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5, minutes=-30))]
)
_datetimes = st.builds(
    lambda dt, tz: dt.replace(tzinfo=tz), st.datetimes(min_value=datetime(1970, 1, 1)), _zones
)


def _escape_dn_value(value: str) -> str:
    escaped = "".join("\\" + c if c in ',+"\\<>;=#' else c for c in value)
    return " ".join(escaped.split())


_entries = st.builds(
    WhitelistEntry,
    domain=_domains,
    description=_text,
    certificate_dn=st.lists(_dn_values.map(_escape_dn_value), min_size=1, max_size=4).map(
        lambda values: ",".join(f"CN={v}" for v in values)
    ),
    responsible_contact=_text,
    support_contact=_text,
    updated_at=st.none() | _datetimes,
)


@given(st.builds(Whitelist, generated_at=_datetimes, entries=st.tuples(*[_entries] * 3)))
@settings(max_examples=200)
def test_any_whitelist_survives_a_write_and_parse_round_trip(wl: Whitelist) -> None:
    assert parse_whitelist(write_whitelist(wl)) == wl


def test_entry_without_update_date_round_trips_without_date_element() -> None:
    wl = parse_whitelist(document(domain(updated=None)))

    assert wl.entries[0].updated_at is None
    assert b"DateMAJ" not in write_whitelist(wl)
    assert parse_whitelist(write_whitelist(wl)) == wl


def test_entry_refuses_a_domain_that_is_not_normalised() -> None:
    with pytest.raises(ValueError, match="not normalised"):
        WhitelistEntry("Op.Example.TEST", "", "CN=x", "", "", None)


# --- Checksum -----------------------------------------------------------------------


def test_matching_checksum_in_any_case_is_accepted(fixture_bytes: bytes) -> None:
    digest = hashlib.sha256(fixture_bytes).hexdigest()

    assert parse_whitelist(fixture_bytes, sha256=digest.upper()) == parse_whitelist(fixture_bytes)


def test_checksum_mismatch_is_refused_before_parsing(fixture_bytes: bytes) -> None:
    digest = hashlib.sha256(fixture_bytes + b" ").hexdigest()

    with pytest.raises(WhitelistError, match="checksum mismatch"):
        parse_whitelist(fixture_bytes, sha256=digest)


def test_checksum_that_is_not_a_sha256_digest_is_refused(fixture_bytes: bytes) -> None:
    with pytest.raises(WhitelistError, match="not a SHA-256 hex digest"):
        parse_whitelist(fixture_bytes, sha256="abc123")


# --- Hostile XML --------------------------------------------------------------------


def test_external_entity_reading_a_local_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    xxe = (
        f'<?xml version="1.0"?>'
        f'<!DOCTYPE ListeBlancheMSSante [<!ENTITY leak SYSTEM "file://{secret}">]>'
        f'<ListeBlancheMSSante xmlns="{NAMESPACE}">'
        f"<DateDeGeneration>2026-11-23T00:00:00</DateDeGeneration>"
        f"<ListeDomaines><Domaine>{domain()}<Description>&leak;</Description>"
        f"</Domaine></ListeDomaines></ListeBlancheMSSante>"
    ).encode()

    with pytest.raises(WhitelistError, match="DTD or entities") as caught:
        parse_whitelist(xxe)
    assert "TOP-SECRET" not in str(caught.value)


def test_billion_laughs_entity_expansion_is_refused() -> None:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    bomb = (
        f'<?xml version="1.0"?><!DOCTYPE ListeBlancheMSSante [{"".join(entities)}]>'
        f'<ListeBlancheMSSante xmlns="{NAMESPACE}">'
        f"<DateDeGeneration>&lol9;</DateDeGeneration>"
        f"<ListeDomaines/></ListeBlancheMSSante>"
    ).encode()

    with pytest.raises(WhitelistError, match="DTD or entities"):
        parse_whitelist(bomb)


def test_malformed_xml_is_refused_with_its_position() -> None:
    with pytest.raises(WhitelistError, match=r"not well-formed XML: .*line 1"):
        parse_whitelist(document(domain())[:-10])


@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_parse_or_raise_whitelist_error(data: bytes) -> None:
    try:
        parse_whitelist(data)
    except WhitelistError:
        pass


# --- Structure and field errors -----------------------------------------------------


def test_root_without_namespace_is_refused_naming_the_namespace() -> None:
    data = document(domain()).replace(f' xmlns="{NAMESPACE}"'.encode(), b"")

    with pytest.raises(
        WhitelistError, match=r"<ListeBlancheMSSante> \(no namespace\).*listeblanche"
    ):
        parse_whitelist(data)


def test_wrong_root_element_is_refused() -> None:
    data = f'<WhiteList xmlns="{NAMESPACE}"/>'.encode()

    with pytest.raises(WhitelistError, match=r"root element is <WhiteList>"):
        parse_whitelist(data)


def test_child_element_outside_the_namespace_is_refused() -> None:
    data = document(domain().replace("<Nom>", '<Nom xmlns="">'))

    with pytest.raises(
        WhitelistError, match=r"Domaine #1: unexpected element <Nom> \(no namespace\)"
    ):
        parse_whitelist(data)


def test_domain_without_name_is_refused_naming_its_position() -> None:
    data = document(domain(), domain(name=None))

    with pytest.raises(WhitelistError, match=r"Domaine #2: <Nom> is missing"):
        parse_whitelist(data)


def test_invalid_domain_name_is_refused_naming_the_value() -> None:
    data = document(domain(name="bad_name.example.test"))

    with pytest.raises(WhitelistError, match=r"Domaine #1: <Nom> 'bad_name.example.test'"):
        parse_whitelist(data)


def test_domain_without_certificate_dn_is_refused_naming_the_domain() -> None:
    data = document(domain(), domain(name="second.example.test", dn=None))

    with pytest.raises(
        WhitelistError,
        match=r"Domaine #2 \(second.example.test\): <DNCertificatOperateur> is missing",
    ):
        parse_whitelist(data)


def test_unreadable_certificate_dn_is_refused() -> None:
    data = document(domain(dn="this is not a DN"))

    with pytest.raises(WhitelistError, match="is not an RFC 4514 DN"):
        parse_whitelist(data)


def test_invalid_update_date_is_refused_naming_the_domain() -> None:
    data = document(domain(updated="2026-13-45"))

    with pytest.raises(
        WhitelistError, match=r"Domaine #1 \(op.example.test\): <DateMAJ> '2026-13-45'"
    ):
        parse_whitelist(data)


def test_invalid_generation_date_is_refused() -> None:
    with pytest.raises(WhitelistError, match=r"<DateDeGeneration> 'hier'"):
        parse_whitelist(document(domain(), generated="hier"))


def test_repeated_field_in_one_domain_is_refused() -> None:
    data = document(domain() + "<Nom>other.example.test</Nom>")

    with pytest.raises(WhitelistError, match=r"Domaine #1: <Nom> appears more than once"):
        parse_whitelist(data)


def test_domain_names_are_lower_cased_and_idna_encoded() -> None:
    wl = parse_whitelist(document(domain(name=" Hôpital.Exemple.TEST ")))

    assert wl.entries[0].domain == "xn--hpital-ixa.exemple.test"


def test_certificate_dn_whitespace_is_folded() -> None:
    wl = parse_whitelist(document(domain(dn="\n  CN=op.example.test,\n   O=Op   Test,C=FR  ")))

    assert wl.entries[0].certificate_dn == "CN=op.example.test, O=Op Test,C=FR"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("localhost", "not fully qualified"),
        ("a..example.test", "empty label"),
        ("-op.example.test", "inner hyphens"),
        ("op.example.123", "all digits"),
        ("x" * 64 + ".test", "longer than 63"),
    ],
)
def test_invalid_domain_names_are_refused_with_the_reason(name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        normalise_domain(name)


# --- Distinguished names (RFC 4514) -------------------------------------------------


def test_dn_parsing_decodes_escaped_commas_and_upper_cases_types() -> None:
    assert parse_dn(r"cn=Dupont\, Jean,o=CHU Exemple") == (
        ("CN", "Dupont, Jean"),
        ("O", "CHU Exemple"),
    )


def test_dn_parsing_drops_spaces_around_separators_but_keeps_escaped_ones() -> None:
    assert parse_dn(r" CN = op.test , O = Op\  ") == (("CN", "op.test"), ("O", "Op "))


def test_dn_parsing_decodes_hex_escapes_as_utf8() -> None:
    assert parse_dn(r"CN=H\C3\B4pital\2C Paris") == (("CN", "Hôpital, Paris"),)


def test_dn_parsing_maps_well_known_oids_to_names() -> None:
    assert parse_dn("2.5.4.3=op.test,2.5.4.6=FR") == (("CN", "op.test"), ("C", "FR"))


@pytest.mark.parametrize(
    "dn",
    ["CN", "CN=a,", "=a", "CN=a;O=b", "CN=a\\x", "C N=a", "CN=#abc", r"CN=\FF"],
)
def test_malformed_dn_strings_are_refused(dn: str) -> None:
    with pytest.raises(ValueError):
        parse_dn(dn)


def test_dns_match_across_case_and_whitespace_differences() -> None:
    assert dn_matches(
        "CN=mx2.chu-exemple.test,OU=0002 123456789,O=CHU EXEMPLE,C=FR",
        "cn=MX2.CHU-EXEMPLE.TEST, ou=0002   123456789 , o=chu exemple,c=fr",
    )


def test_dns_match_whichever_way_a_comma_is_escaped() -> None:
    assert dn_matches(r"CN=Dupont\, Jean,O=CHU", r"CN=Dupont\2C Jean,O=CHU")


def test_escaped_comma_is_not_an_rdn_separator() -> None:
    assert not dn_matches(r"CN=Dupont\, O=CHU", "CN=Dupont, O=CHU")


def test_dns_with_rdns_in_another_order_do_not_match() -> None:
    assert not dn_matches("CN=op.test,O=Op,C=FR", "C=FR,O=Op,CN=op.test")


def test_dns_with_a_different_value_do_not_match() -> None:
    assert not dn_matches("CN=op.test,O=Op,C=FR", "CN=op.test,O=Other,C=FR")


def test_multi_valued_rdn_matches_in_any_ava_order() -> None:
    assert dn_matches("CN=op+UID=42,O=Op", "UID=42+CN=op,O=Op")
    assert not dn_matches("CN=op+UID=42,O=Op", "CN=op,UID=42,O=Op")


def test_malformed_or_empty_dns_never_match() -> None:
    assert not dn_matches("CN=a;b", "CN=a;b")
    assert not dn_matches("", "")


def test_certificate_subject_rendered_by_cryptography_matches_whitelist_dn() -> None:
    # What the TLS layer will compare: a peer certificate's subject, as a string.
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Paris (75)"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "PARIS"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CHU EXEMPLE"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "0002 123456789"),
            x509.NameAttribute(NameOID.COMMON_NAME, "mx2.chu-exemple.test"),
        ]
    )

    assert dn_matches(subject.rfc4514_string(), CHU_DN)


@given(st.text(max_size=60))
def test_arbitrary_dn_strings_parse_or_raise_value_error(dn: str) -> None:
    try:
        pairs = parse_dn(dn)
    except ValueError:
        return
    assert all(attr == attr.upper() for attr, _ in pairs)
