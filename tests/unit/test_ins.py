"""Tests for the matricule INS: parsing, refusals with their reasons, patient addresses.

Reference numbers whose keys were checked independently of the code under test:
- 279035121518989: example from the product brief (97 - 2790351215189 mod 97 = 89).
- 2 06 12 75 111 005 / 64: published worked example of the NIR key.
"""

from __future__ import annotations

import datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from directory.ins import (
    INS,
    NIA_OID,
    NIR_OID,
    InvalidINS,
    compute_key,
    ins_from_patient_address,
    is_patient_address,
    parse_ins,
    patient_address,
)

BRIEF_EXAMPLE = "279035121518989"
PUBLISHED_EXAMPLE = "206127511100564"
DOMAIN = "mssante.fr"


def with_key(body: str) -> str:
    return f"{body}{compute_key(body):02d}"


def refusal(
    value: str,
    *,
    oid: str = NIR_OID,
    sex: str | None = None,
    birthdate: datetime.date | None = None,
) -> InvalidINS:
    with pytest.raises(InvalidINS) as excinfo:
        parse_ins(value, oid=oid, sex=sex, birthdate=birthdate)
    return excinfo.value


# --- strategies ------------------------------------------------------------------------

two_digits = st.integers(0, 99).map(lambda n: f"{n:02d}")
three_digits = st.integers(0, 999).map(lambda n: f"{n:03d}")
allowed_months = st.one_of(st.integers(1, 12), st.integers(20, 42), st.integers(50, 99)).map(
    lambda n: f"{n:02d}"
)
departments = st.one_of(two_digits, st.sampled_from(["2A", "2B"]))


@st.composite
def valid_bodies(draw: st.DrawFn) -> str:
    return (
        draw(st.sampled_from("1278"))
        + draw(two_digits)
        + draw(allowed_months)
        + draw(departments)
        + draw(three_digits)
        + draw(three_digits)
    )


valid_matricules = valid_bodies().map(with_key)


# --- the key ---------------------------------------------------------------------------


def test_brief_example_key_is_89() -> None:
    assert compute_key(BRIEF_EXAMPLE[:13]) == 89


def test_published_example_key_is_64() -> None:
    assert compute_key(PUBLISHED_EXAMPLE[:13]) == 64


def test_corsican_2a_key_is_computed_as_department_19() -> None:
    # 1850519123456 mod 97 = 64, so the key is 33.
    assert compute_key("185052A123456") == 33


def test_compute_key_refuses_a_body_of_the_wrong_length() -> None:
    with pytest.raises(InvalidINS) as excinfo:
        compute_key("279035121518")
    assert excinfo.value.reason == "length"


@given(st.integers(0, 10**13 - 1))
def test_key_complements_a_digit_body_to_a_multiple_of_97(body: int) -> None:
    key = compute_key(f"{body:013d}")
    assert 1 <= key <= 97
    assert (body + key) % 97 == 0


@given(valid_bodies())
def test_any_body_with_its_computed_key_validates(body: str) -> None:
    ins = parse_ins(with_key(body))
    assert ins.matricule[:13] == body


@given(valid_bodies(), st.data())
def test_changing_one_body_character_changes_the_key(body: str, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, 12))
    replacement = data.draw(st.sampled_from("0123456789"))
    assume(body[position] != replacement)
    changed = body[:position] + replacement + body[position + 1 :]
    try:
        new_key = compute_key(changed)
    except InvalidINS as exc:
        # Only a broken 2A/2B (e.g. "2A" -> "1A") makes the body uncomputable.
        assert exc.reason == "corsica"
    else:
        assert new_key != compute_key(body)


@given(valid_matricules, st.data())
def test_changing_any_one_character_of_a_valid_number_is_refused(
    matricule: str, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, 14))
    replacement = data.draw(st.sampled_from("0123456789"))
    assume(matricule[position] != replacement)
    with pytest.raises(InvalidINS):
        parse_ins(matricule[:position] + replacement + matricule[position + 1 :])


@given(valid_bodies(), st.integers(0, 11))
def test_swapping_two_adjacent_different_digits_changes_the_key(body: str, i: int) -> None:
    assume(body[i] != body[i + 1] and body[i : i + 2].isdigit())
    swapped = body[:i] + body[i + 1] + body[i] + body[i + 2 :]
    try:
        assert compute_key(swapped) != compute_key(body)
    except InvalidINS as exc:
        assert exc.reason == "corsica"


@given(st.sampled_from([("2A", "19"), ("2B", "18")]), two_digits, st.data())
def test_corsican_department_counts_as_its_numeric_substitute(
    pair: tuple[str, str], year: str, data: st.DataObject
) -> None:
    letters, digits = pair
    head = data.draw(st.sampled_from("12")) + year + data.draw(allowed_months)
    tail = data.draw(three_digits) + data.draw(three_digits)
    assert compute_key(head + letters + tail) == compute_key(head + digits + tail)
    assert compute_key(head + "2A" + tail) != compute_key(head + "2B" + tail)


# --- accepted numbers ------------------------------------------------------------------


def test_brief_example_is_a_valid_nir() -> None:
    ins = parse_ins(BRIEF_EXAMPLE)
    assert ins == INS(BRIEF_EXAMPLE, NIR_OID)
    assert (ins.sex_digit, ins.birth_year_2, ins.birth_month, ins.department) == (2, 79, 3, "51")
    assert not ins.is_provisional


def test_published_example_is_valid() -> None:
    assert parse_ins(PUBLISHED_EXAMPLE).department == "75"


def test_spaces_and_surrounding_whitespace_are_ignored() -> None:
    assert parse_ins("  2 79 03 51\u00a0215 189\t89\n").matricule == BRIEF_EXAMPLE


@given(valid_matricules, st.lists(st.integers(0, 15), max_size=5))
def test_spaces_anywhere_do_not_change_the_parsed_number(matricule: str, cuts: list[int]) -> None:
    spaced = matricule
    for cut in sorted(cuts, reverse=True):
        spaced = spaced[:cut] + " " + spaced[cut:]
    assert parse_ins(spaced).matricule == matricule


def test_lower_case_corsican_department_is_upper_cased() -> None:
    matricule = with_key("185052A123456")
    ins = parse_ins(matricule.lower())
    assert ins.matricule == matricule
    assert ins.department == "2A"


def test_nia_oid_is_kept() -> None:
    assert parse_ins(BRIEF_EXAMPLE, oid=NIA_OID).oid == NIA_OID


@pytest.mark.parametrize("sex_digit, sex", [("7", "M"), ("8", "F")])
def test_provisional_number_is_accepted_and_flagged(sex_digit: str, sex: str) -> None:
    ins = parse_ins(with_key(sex_digit + BRIEF_EXAMPLE[1:13]), sex=sex)
    assert ins.is_provisional


@pytest.mark.parametrize("month", ["20", "42", "50", "62", "63", "99"])
def test_fictitious_month_means_unknown_and_matches_any_birth_month(month: str) -> None:
    ins = parse_ins(with_key("279" + month + "51215189"), birthdate=datetime.date(1979, 11, 30))
    assert ins.birth_month is None


def test_matching_identity_traits_are_accepted() -> None:
    ins = parse_ins(BRIEF_EXAMPLE, sex="F", birthdate=datetime.date(1979, 3, 12))
    assert ins.matricule == BRIEF_EXAMPLE


def test_birth_year_is_compared_modulo_100() -> None:
    assert parse_ins(BRIEF_EXAMPLE, birthdate=datetime.date(2079, 3, 1)).birth_year_2 == 79


# --- refusals, one per reason ----------------------------------------------------------


def test_nir_of_wrong_length_is_refused() -> None:
    assert refusal(BRIEF_EXAMPLE[:-1]).reason == "length"


def test_nir_with_punctuation_is_refused() -> None:
    assert refusal("279.03.51.215.189.89").reason == "characters"


def test_nir_with_letter_outside_the_department_is_refused() -> None:
    assert refusal("2790351215A8989").reason == "characters"


@pytest.mark.parametrize("department", ["1A", "A2", "AB", "3B"])
def test_nir_with_malformed_corsican_department_is_refused(department: str) -> None:
    assert refusal("27903" + department + "21518989").reason == "corsica"


@pytest.mark.parametrize("sex_digit", ["0", "3", "4", "5", "6", "9"])
def test_nir_with_unknown_sex_digit_is_refused(sex_digit: str) -> None:
    assert refusal(with_key(sex_digit + BRIEF_EXAMPLE[1:13])).reason == "sex-digit"


@pytest.mark.parametrize("month", ["00", "13", "19", "43", "49"])
def test_nir_with_impossible_month_is_refused(month: str) -> None:
    assert refusal(with_key("279" + month + "51215189")).reason == "month"


def test_nir_with_wrong_key_is_refused() -> None:
    assert refusal(BRIEF_EXAMPLE[:13] + "88").reason == "key"


@pytest.mark.parametrize("key", ["00", "98", "99"])
def test_nir_with_key_outside_01_97_is_refused(key: str) -> None:
    exc = refusal(BRIEF_EXAMPLE[:13] + key)
    assert exc.reason == "key"
    assert "01 to 97" in exc.message


def test_wrong_key_message_neither_reveals_the_matching_key_nor_the_number() -> None:
    message = refusal(BRIEF_EXAMPLE[:13] + "88").message
    assert "89" not in message
    assert BRIEF_EXAMPLE[:13] not in message


def test_nir_contradicting_the_sex_trait_is_refused() -> None:
    assert refusal(BRIEF_EXAMPLE, sex="M").reason == "sex-mismatch"


def test_nir_contradicting_the_birth_year_is_refused() -> None:
    exc = refusal(BRIEF_EXAMPLE, birthdate=datetime.date(1980, 3, 1))
    assert exc.reason == "birth-year-mismatch"


def test_nir_contradicting_the_birth_month_is_refused() -> None:
    exc = refusal(BRIEF_EXAMPLE, birthdate=datetime.date(1979, 4, 1))
    assert exc.reason == "birth-month-mismatch"


def test_unknown_oid_is_refused() -> None:
    assert refusal(BRIEF_EXAMPLE, oid="1.2.250.1.213.1.4.2").reason == "oid"


def test_sex_trait_other_than_m_or_f_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="'M' or 'F'") as excinfo:
        parse_ins(BRIEF_EXAMPLE, sex="X")
    assert not isinstance(excinfo.value, InvalidINS)


def test_ins_cannot_be_built_from_an_invalid_matricule() -> None:
    with pytest.raises(InvalidINS) as excinfo:
        INS(BRIEF_EXAMPLE[:13] + "88", NIR_OID)
    assert excinfo.value.reason == "key"


def test_refusal_exposes_reason_and_message() -> None:
    exc = refusal("123")
    assert exc.reason == "length"
    assert "expected 15" in exc.message
    assert isinstance(exc, ValueError)


# --- patient addresses -----------------------------------------------------------------


def test_patient_address_of_brief_example() -> None:
    ins = parse_ins(BRIEF_EXAMPLE)
    assert patient_address(ins, "MSSante.FR") == "279035121518989@patient.mssante.fr"


def test_corsican_patient_address_keeps_upper_case_department() -> None:
    ins = parse_ins(with_key("185052A123456").lower())
    assert patient_address(ins, DOMAIN).startswith("185052A123456")


@given(valid_matricules)
def test_patient_address_round_trips(matricule: str) -> None:
    ins = INS(matricule, NIR_OID)
    address = patient_address(ins, DOMAIN)
    assert is_patient_address(address, DOMAIN)
    assert ins_from_patient_address(address, DOMAIN) == ins


def test_patient_address_domain_is_case_insensitive() -> None:
    assert is_patient_address(f"{BRIEF_EXAMPLE}@Patient.MSSANTE.fr", DOMAIN)


def test_ins_from_patient_address_uses_the_given_oid() -> None:
    address = f"{BRIEF_EXAMPLE}@patient.{DOMAIN}"
    assert ins_from_patient_address(address, DOMAIN, oid=NIA_OID).oid == NIA_OID


@pytest.mark.parametrize(
    "address",
    [
        f"{BRIEF_EXAMPLE}@{DOMAIN}",
        f"{BRIEF_EXAMPLE}@patient.other.fr",
        f"{BRIEF_EXAMPLE}@patient.{DOMAIN}.evil.example",
        f"{BRIEF_EXAMPLE}@sub.patient.{DOMAIN}",
    ],
)
def test_address_outside_the_patient_domain_is_refused(address: str) -> None:
    with pytest.raises(InvalidINS) as excinfo:
        ins_from_patient_address(address, DOMAIN)
    assert excinfo.value.reason == "domain"
    assert not is_patient_address(address, DOMAIN)


@pytest.mark.parametrize(
    "address",
    [
        BRIEF_EXAMPLE,
        f"@patient.{DOMAIN}",
        f"a@{BRIEF_EXAMPLE}@patient.{DOMAIN}",
        f"279 035121518989@patient.{DOMAIN}",
    ],
)
def test_malformed_patient_address_is_refused(address: str) -> None:
    with pytest.raises(InvalidINS) as excinfo:
        ins_from_patient_address(address, DOMAIN)
    assert excinfo.value.reason == "address"


def test_patient_address_with_invalid_local_part_is_refused() -> None:
    address = f"{BRIEF_EXAMPLE[:13]}88@patient.{DOMAIN}"
    with pytest.raises(InvalidINS) as excinfo:
        ins_from_patient_address(address, DOMAIN)
    assert excinfo.value.reason == "key"
    assert not is_patient_address(address, DOMAIN)
