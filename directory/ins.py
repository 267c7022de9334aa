"""The INS (Identifiant National de Santé) "matricule INS" and the patient mail address.

A patient reaches the trust space through an address built from their matricule INS, so a
wrong digit would route health data to somebody else's mailbox. This module therefore refuses
anything that is not a well-formed, checksum-valid matricule, and every refusal carries a
stable reason code that callers can branch on and a sentence that a person can act on.

Spec: INS référentiel (ANS) for the matricule INS and its OIDs; NIR structure (INSEE) for the
positions and the check key. The matricule INS is the NIR or, failing that, the NIA, which
has the same 15-character shape::

    position  1      sex: 1 male, 2 female; 7 male, 8 female for provisional numbers
    position  2-3    last two digits of the birth year
    position  4-5    birth month 01-12, or a "fictitious" month when it is unknown
    position  6-7    birth department: two digits, or 2A / 2B for Corsica
    position  8-10   commune
    position 11-13   order number
    position 14-15   check key = 97 - (first 13 digits mod 97), 01..97

Error messages deliberately never repeat the whole matricule (it is sensitive personal data
and messages end up in logs), and never reveal the key that *would* match: a person who
mistyped the body must re-read the number, not be handed a key that validates the wrong
patient.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

__all__ = [
    "INS",
    "NIA_OID",
    "NIR_OID",
    "InvalidINS",
    "compute_key",
    "ins_from_patient_address",
    "is_patient_address",
    "parse_ins",
    "patient_address",
]

#: OID of the matricule INS when it is a NIR (INS référentiel).
NIR_OID = "1.2.250.1.213.1.4.8"
#: OID of the matricule INS when it is a NIA (INS référentiel).
NIA_OID = "1.2.250.1.213.1.4.9"
_KNOWN_OIDS = frozenset({NIR_OID, NIA_OID})

_LENGTH = 15
_BODY_LENGTH = 13
_DIGITS = frozenset("0123456789")
# Department field (positions 6-7, indexes 5:7) is the only place letters may appear.
_DEPT = slice(5, 7)
# NIR structure (INSEE): Corsica's 2A / 2B count as 19 / 18 in the key computation, because
# the key is a modulus of a number and letters have no numeric value.
_CORSICA_FOR_KEY = {"2A": "19", "2B": "18"}

# NIR structure (INSEE), position 1. 1/2 are regular numbers (male/female); 7/8 are
# provisional numbers (male/female) given while registration is pending. 3/4 (temporary
# numbers of some foreign-born people) are not accepted as a matricule INS here.
_SEX_DIGITS = {"1": "M", "2": "F", "7": "M", "8": "F"}
_PROVISIONAL_SEX_DIGITS = frozenset({"7", "8"})


def _month_known(month: int) -> bool:
    return 1 <= month <= 12


def _month_fictitious(month: int) -> bool:
    # NIR structure (INSEE), positions 4-5: when the birth month is unknown (incomplete civil
    # record) a "fictitious" month is written instead: 20-42 or 50-99 (this range includes
    # 62-63, which are also in use). 00, 13-19 and 43-49 are never issued.
    return 20 <= month <= 42 or 50 <= month <= 99


class InvalidINS(ValueError):
    """A value was refused as a matricule INS (or as a patient address).

    ``reason`` is a short stable code for programs ("length", "characters", "corsica",
    "sex-digit", "month", "key", "sex-mismatch", "birth-year-mismatch",
    "birth-month-mismatch", "oid", "address", "domain"); ``message`` is an English sentence
    for people saying what is wrong and what is expected.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def _check_alphabet(value: str) -> None:
    """Refuse characters that can never appear in a NIR (checked before the length, so that
    "279.03.51..." is reported as a punctuation problem rather than as a length problem)."""
    for index, char in enumerate(value):
        if char not in _DIGITS and char not in "AB":
            raise InvalidINS(
                "characters",
                f"character {char!r} at position {index + 1} is not allowed; expected digits "
                "only (and 2A or 2B in positions 6-7 for Corsica)",
            )


def _check_length(value: str, expected: int, what: str) -> None:
    if len(value) != expected:
        raise InvalidINS(
            "length",
            f"{what} has {len(value)} characters; expected {expected}"
            + (" (13 characters then a 2-digit key)" if expected == _LENGTH else ""),
        )


def _check_letters(value: str) -> None:
    """Refuse misplaced or malformed Corsican letters (value already of the right length).

    NIR structure (INSEE): every position is a digit, except the department (positions 6-7)
    which may be 2A or 2B for Corsica.
    """
    for index, char in enumerate(value):
        if char in "AB" and not _DEPT.start <= index < _DEPT.stop:
            raise InvalidINS(
                "characters",
                f"letter {char!r} at position {index + 1} is not allowed; letters may only "
                "appear in the department (positions 6-7) as 2A or 2B for Corsica",
            )
    dept = value[_DEPT]
    if not set(dept) <= _DIGITS and dept not in _CORSICA_FOR_KEY:
        raise InvalidINS(
            "corsica",
            f"department {dept!r} (positions 6-7) is not valid; a department with a letter "
            "must be 2A or 2B (Corsica)",
        )


def _check_body(body: str) -> None:
    """Refuse a 13-character NIR body with the wrong characters or length.

    Shared by :func:`compute_key` and full validation so the two can never disagree on
    which bodies are computable.
    """
    _check_alphabet(body)
    _check_length(body, _BODY_LENGTH, "the body before the key")
    _check_letters(body)


def compute_key(first13: str) -> int:
    """Return the NIR check key (1..97) of a 13-character body.

    NIR structure (INSEE): key = 97 - (body mod 97), with Corsica's department 2A counted as
    19 and 2B as 18. Raises :class:`InvalidINS` if ``first13`` is not a 13-character body.
    """
    _check_body(first13)
    dept = first13[_DEPT]
    numeric = first13[: _DEPT.start] + _CORSICA_FOR_KEY.get(dept, dept) + first13[_DEPT.stop :]
    return 97 - int(numeric) % 97


def _validate_matricule(matricule: str) -> None:
    """Refuse a matricule (already normalised) that breaks the NIR structure (INSEE)."""
    _check_alphabet(matricule)
    _check_length(matricule, _LENGTH, "the number")
    _check_letters(matricule)
    sex_digit = matricule[0]
    if sex_digit not in _SEX_DIGITS:
        raise InvalidINS(
            "sex-digit",
            f"first digit {sex_digit} is not a valid sex digit; expected 1 (male) or "
            "2 (female), or 7 / 8 for a provisional number",
        )
    month = int(matricule[3:5])
    if not (_month_known(month) or _month_fictitious(month)):
        raise InvalidINS(
            "month",
            f"birth month {matricule[3:5]} (positions 4-5) does not exist; expected 01-12, "
            "or 20-42 / 50-99 when the birth month is unknown",
        )
    key_text = matricule[13:]
    key = int(key_text)
    if not 1 <= key <= 97:
        raise InvalidINS(
            "key",
            f"check key {key_text} (positions 14-15) is out of range; a key is 01 to 97",
        )
    if key != compute_key(matricule[:13]):
        raise InvalidINS(
            "key",
            f"check key {key_text} (positions 14-15) does not match the first 13 "
            "characters; the number is probably mistyped, please re-read it",
        )


@dataclass(frozen=True)
class INS:
    """A validated matricule INS together with the OID saying whether it is a NIR or a NIA.

    Construction validates, so holding an ``INS`` means holding a well-formed number; use
    :func:`parse_ins` to accept human input (spaces, lower-case 2a/2b, identity traits).
    """

    matricule: str
    oid: str = NIR_OID

    def __post_init__(self) -> None:
        if self.oid not in _KNOWN_OIDS:
            raise InvalidINS(
                "oid",
                f"OID {self.oid!r} is not an INS OID; expected {NIR_OID} (NIR) or {NIA_OID} (NIA)",
            )
        _validate_matricule(self.matricule)

    @property
    def sex_digit(self) -> int:
        """Position 1: 1/2 regular male/female, 7/8 provisional male/female."""
        return int(self.matricule[0])

    @property
    def birth_year_2(self) -> int:
        """Positions 2-3: the birth year modulo 100 (the century is not encoded)."""
        return int(self.matricule[1:3])

    @property
    def birth_month(self) -> int | None:
        """Positions 4-5 as a month 1-12, or ``None`` when a fictitious month says unknown."""
        month = int(self.matricule[3:5])
        return month if _month_known(month) else None

    @property
    def department(self) -> str:
        """Positions 6-7: two digits, or "2A" / "2B" for Corsica."""
        return self.matricule[_DEPT]

    @property
    def is_provisional(self) -> bool:
        """True for provisional numbers (sex digit 7 or 8)."""
        return self.matricule[0] in _PROVISIONAL_SEX_DIGITS


def _normalise(value: str) -> str:
    # People write NIRs grouped with spaces (including no-break spaces): drop all whitespace.
    compact = "".join(value.split())
    # Upper-case only a/b: str.upper() on arbitrary text can change the length ("ß" -> "SS").
    return compact.replace("a", "A").replace("b", "B")


def _check_traits(ins: INS, sex: str | None, birthdate: datetime.date | None) -> None:
    if sex is not None:
        wanted = sex.strip().upper()
        if wanted not in ("M", "F"):
            raise ValueError(f"sex trait must be 'M' or 'F', got {sex!r}")
        encoded = _SEX_DIGITS[ins.matricule[0]]
        if encoded != wanted:
            raise InvalidINS(
                "sex-mismatch",
                f"sex digit {ins.sex_digit} means {'male' if encoded == 'M' else 'female'} "
                f"but the identity says {wanted}; expected "
                f"{'1 or 7' if wanted == 'M' else '2 or 8'}",
            )
    if birthdate is not None:
        if ins.birth_year_2 != birthdate.year % 100:
            raise InvalidINS(
                "birth-year-mismatch",
                f"birth year digits {ins.matricule[1:3]} (positions 2-3) do not match the "
                f"birth date; expected {birthdate.year % 100:02d}",
            )
        month = ins.birth_month
        if month is not None and month != birthdate.month:
            raise InvalidINS(
                "birth-month-mismatch",
                f"birth month {ins.matricule[3:5]} (positions 4-5) does not match the birth "
                f"date; expected {birthdate.month:02d} (or 20-42 / 50-99 if unknown)",
            )


def parse_ins(
    value: str,
    *,
    oid: str = NIR_OID,
    sex: str | None = None,
    birthdate: datetime.date | None = None,
) -> INS:
    """Parse a matricule INS typed or received from outside, and validate it.

    Whitespace anywhere is dropped and 2a/2b are upper-cased, because that is how people
    write the number. When identity traits are given (``sex`` "M"/"F", ``birthdate``), the
    number must agree with them (INS référentiel: the matricule is only trusted together
    with matching traits); an unknown birth month (20-42 / 50-99) matches any month.

    Raises :class:`InvalidINS` naming the reason; raises ``ValueError`` if ``sex`` is not
    "M" or "F" (a caller error, not a property of the number).
    """
    ins = INS(_normalise(value), oid)
    _check_traits(ins, sex, birthdate)
    return ins


def _patient_domain(operator_domain: str) -> str:
    domain = operator_domain.strip().lower()
    if not domain or "@" in domain or any(c.isspace() for c in domain):
        raise ValueError(f"operator domain {operator_domain!r} is not a domain name")
    return f"patient.{domain}"


def patient_address(ins: INS, operator_domain: str) -> str:
    """Return the patient's mail address ``<matricule>@patient.<operator_domain>``.

    The matricule is used as validated (digits, upper-case 2A/2B); the domain is lowercased
    so that one patient has exactly one address.
    """
    return f"{ins.matricule}@{_patient_domain(operator_domain)}"


def ins_from_patient_address(address: str, operator_domain: str, *, oid: str = NIR_OID) -> INS:
    """Recover the INS from a patient address of this operator.

    The address does not say whether the matricule is a NIR or a NIA, so the caller supplies
    ``oid`` (default NIR). Raises :class:`InvalidINS` with reason "address" if it is not a
    single ``local@domain``, "domain" if the domain is not ``patient.<operator_domain>``, or
    the matricule's reason if the local part is not a valid INS as written.
    """
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or any(c.isspace() for c in address.strip()) or "@" in local:
        raise InvalidINS(
            "address",
            "the patient address is not of the form <matricule>@patient.<operator domain>",
        )
    expected = _patient_domain(operator_domain)
    if domain.lower() != expected:
        raise InvalidINS(
            "domain",
            f"the address domain {domain!r} is not this operator's patient domain; "
            f"expected {expected!r}",
        )
    return INS(local.replace("a", "A").replace("b", "B"), oid)


def is_patient_address(address: str, operator_domain: str) -> bool:
    """True if ``address`` is a valid patient address of this operator."""
    try:
        ins_from_patient_address(address, operator_domain)
    except InvalidINS:
        return False
    return True
