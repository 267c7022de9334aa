"""The IMAP primitives: reading atoms, strings, literals, numbers, dates, flags and mailbox
names from a command, and writing response values."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap.wire import (
    Atom,
    Encoded,
    LiteralData,
    ParseError,
    Reader,
    decode_mailbox,
    decode_modified_utf7,
    encode_mailbox,
    encode_modified_utf7,
    format_date_time,
    literal,
    quote,
    render,
    render_astring,
    render_sequence,
    render_string,
)
from tests.imap.framed import reader


def refusal(read: object) -> str:
    """The reason a read refuses its input."""
    assert callable(read)
    with pytest.raises(ParseError) as caught:
        read()
    return caught.value.reason


# -- atoms and strings ----------------------------------------------------------------------


def test_atom_stops_at_atom_specials() -> None:
    cursor = reader(b"abc.def(rest")
    assert cursor.atom() == "abc.def"
    assert cursor.peek() == ord("(")


def test_atom_refuses_an_empty_atom_and_says_what_it_found() -> None:
    assert refusal(reader(b"(x").atom) == 'expected an atom, found "(x"'


def test_astring_accepts_the_resp_special_bracket_unquoted() -> None:
    assert reader(b"a]b").astring() == b"a]b"


@pytest.mark.parametrize(
    ("wire", "value"),
    [
        (b'""', b""),
        (b'"plain"', b"plain"),
        (b'"say \\"hi\\""', b'say "hi"'),
        (b'"back\\\\slash"', b"back\\slash"),
        ('"café"'.encode(), "café".encode()),
    ],
)
def test_quoted_string_unescapes_its_content(wire: bytes, value: bytes) -> None:
    assert reader(wire).quoted() == value


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b'"open', "unterminated quoted string"),
        (b'"bad \\n escape"', '"\\" in a quoted string may only escape "\\" or \'"\''),
        (b'"cr\r inside"', "quoted string contains the control octet 0x0d"),
        (b'"nul\x00"', "quoted string contains the control octet 0x00"),
        (b'"\xff\xfe"', "quoted string contains 8-bit data that is not UTF-8"),
        (b"bare", 'expected a quoted string, found "bare"'),
    ],
)
def test_quoted_string_refusals_say_what_is_wrong(wire: bytes, reason: str) -> None:
    assert refusal(reader(wire).quoted) == reason


def test_literal_is_read_where_a_line_segment_ends() -> None:
    cursor = reader(b"{5}\r\nhello rest")
    assert cursor.astring() == b"hello"
    cursor.sp()
    assert cursor.atom() == "rest"
    assert cursor.at_end()


def test_literal_may_hold_crlf_and_8bit_octets() -> None:
    assert reader(b"{6+}\r\na\r\n\xff\x01z").string() == b"a\r\n\xff\x01z"


def test_literal_with_nul_is_refused_and_literal8_suggested() -> None:
    reason = refusal(reader(b"{3}\r\na\x00b").string)
    assert reason == "literal contains a NUL octet: send binary data as a literal8 (~{n})"


def test_literal8_is_refused_where_only_a_literal_is_allowed() -> None:
    reason = refusal(reader(b"~{3}\r\na\x00b").string)
    assert reason == "a literal8 (~{n}) is only allowed for APPEND message data"


def test_literal8_is_read_where_allowed_and_keeps_nul() -> None:
    assert reader(b"~{3}\r\na\x00b").literal(binary_allowed=True) == LiteralData(b"a\x00b", True)


def test_nstring_reads_nil_as_none_but_quoted_nil_as_text() -> None:
    assert reader(b"NIL").nstring() is None
    assert reader(b'"NIL"').nstring() == b"NIL"


def test_end_refuses_trailing_arguments() -> None:
    cursor = reader(b"a b")
    cursor.atom()
    assert refusal(cursor.end) == 'unexpected " b" after the command\'s arguments'


def test_describe_escapes_control_octets_and_truncates() -> None:
    cursor = reader(b"\x01" + b"x" * 40)
    assert cursor.describe() == '"\\x01' + "x" * 23 + '..."'


def test_reader_refuses_segments_that_do_not_alternate() -> None:
    with pytest.raises(ParseError, match="malformed command framing"):
        Reader([b"a", b"b"])
    with pytest.raises(ParseError, match="malformed command framing"):
        Reader([b"a", LiteralData(b"x")])


# -- numbers --------------------------------------------------------------------------------


def test_number_accepts_the_32_bit_range_only() -> None:
    assert reader(b"4294967295").number() == 2**32 - 1
    assert refusal(reader(b"4294967296").number) == "number out of range: 4294967296"


def test_nz_number_refuses_zero_and_leading_zeros() -> None:
    assert reader(b"7").nz_number() == 7
    assert refusal(reader(b"0").nz_number) == 'expected a non-zero number, found "0"'
    assert refusal(reader(b"012").nz_number) == 'expected a non-zero number, found "012"'


def test_number64_accepts_63_bits() -> None:
    assert reader(b"9223372036854775807").number64() == 2**63 - 1
    assert "out of range" in refusal(reader(b"9223372036854775808").number64)


def test_absurdly_long_numbers_are_refused_without_converting_them() -> None:
    assert "out of range" in refusal(reader(b"9" * 5000).number64)


def test_mod_sequence_value_must_be_positive_but_valzer_may_be_zero() -> None:
    assert refusal(reader(b"0").mod_sequence_value) == "mod-sequence must be greater than 0"
    assert reader(b"0").mod_sequence_valzer() == 0


# -- dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "value"),
    [
        (b"1-Feb-1994", date(1994, 2, 1)),
        (b"01-feb-1994", date(1994, 2, 1)),
        (b'"28-DEC-2024"', date(2024, 12, 28)),
    ],
)
def test_date_is_read_quoted_or_not_and_month_case_insensitively(wire: bytes, value: date) -> None:
    assert reader(wire).date() == value


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"31-Feb-2024", "no such date: 31-Feb-2024"),
        (b"1-Foo-2024", "unknown month Foo: use Jan, Feb, ..., Dec"),
        (b"1-Feb-24", 'expected a date such as 1-Feb-2024, found "1-Feb-24"'),
        (b'"1-Feb-2024', 'expected a date such as 1-Feb-2024, found "\\x221-Feb-2024"'),
        (b"Feb-1-2024", 'expected a date such as 1-Feb-2024, found "Feb-1-2024"'),
    ],
)
def test_invalid_dates_are_refused(wire: bytes, reason: str) -> None:
    assert refusal(reader(wire).date) == reason


def test_date_time_reads_a_space_padded_day_and_its_zone() -> None:
    value = reader(b'" 7-Jul-1996 02:44:25 -0700"').date_time()
    assert value == datetime(1996, 7, 7, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7)))


@pytest.mark.parametrize(
    "wire",
    [b'"7-Jul-1996 02:44:25 -0700"', b'"17-Jul-1996 02:44:25"', b"17-Jul-1996"],
)
def test_date_time_needs_the_fixed_quoted_form(wire: bytes) -> None:
    assert refusal(reader(wire).date_time).startswith("expected a date-time")


@pytest.mark.parametrize(
    "wire",
    [
        b'"30-Feb-1996 02:44:25 -0700"',
        b'"17-Jul-1996 25:44:25 -0700"',
        b'"17-Jul-1996 02:44:25 +2500"',
    ],
)
def test_date_time_refuses_impossible_values(wire: bytes) -> None:
    assert refusal(reader(wire).date_time).startswith("invalid date-time")


# -- flags ----------------------------------------------------------------------------------


def test_system_flags_are_canonicalised_and_keywords_kept() -> None:
    assert reader(b"(\\seen \\DELETED $Forwarded \\Custom)").flag_list() == (
        "\\Seen",
        "\\Deleted",
        "$Forwarded",
        "\\Custom",
    )


def test_empty_flag_list_is_allowed() -> None:
    assert reader(b"()").flag_list() == ()


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"(\\)", 'expected a flag name after \\, found ")"'),
        (b"(\\Seen", 'expected ")", found end of command'),
        (b"(\\Seen  \\Draft)", 'expected a flag, found " \\Draft)"'),
    ],
)
def test_malformed_flag_lists_are_refused(wire: bytes, reason: str) -> None:
    assert refusal(reader(wire).flag_list) == reason


# -- mailbox names --------------------------------------------------------------------------


def test_modified_utf7_vectors_from_rfc_3501() -> None:
    # RFC 3501 §5.1.3.
    assert decode_modified_utf7(b"~peter/mail/&U,BTFw-/&ZeVnLIqe-") == "~peter/mail/台北/日本語"
    assert encode_modified_utf7("~peter/mail/台北/日本語") == b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("AT&T", b"AT&-T"),
        ("Entwürfe", b"Entw&APw-rfe"),
        ("", b""),
        ("\t", b"&AAk-"),
        ("😀", b"&2D3eAA-"),
    ],
)
def test_modified_utf7_encodes_ampersand_non_ascii_and_controls(name: str, wire: bytes) -> None:
    assert encode_modified_utf7(name) == wire
    assert decode_modified_utf7(wire) == name


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"AT&T", "mailbox name has an unterminated &...- sequence"),
        (b"&AGE-", 'mailbox name "&AGE-" is not canonical modified UTF-7'),  # "a" encoded
        (b"&AOk-&AOk-", 'mailbox name "&AOk-&AOk-" is not canonical modified UTF-7'),
        (b"&U/BTFw-", "mailbox name has an invalid modified BASE64 sequence"),
        (b"&A-", "mailbox name has an invalid modified BASE64 sequence"),
        (b"&2D0-", "mailbox name has an invalid modified BASE64 sequence"),  # lone surrogate
        (
            "caf\u00e9".encode(),
            "mailbox name contains the octet 0xc3: use modified UTF-7 (RFC 3501 §5.1.3) "
            "or enable UTF8=ACCEPT",
        ),
    ],
)
def test_invalid_modified_utf7_is_refused(wire: bytes, reason: str) -> None:
    assert refusal(lambda: decode_modified_utf7(wire)) == reason


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_modified_utf7_round_trips_any_name(name: str) -> None:
    wire = encode_modified_utf7(name)
    assert wire.isascii()
    assert decode_modified_utf7(wire) == name


def test_mailbox_names_are_utf8_once_enabled() -> None:
    assert reader('"台北"'.encode()).mailbox(utf8=True) == "台北"
    assert encode_mailbox("台北", utf8=True) == "台北".encode()
    assert refusal(lambda: decode_mailbox(b"\xff", utf8=True)) == "mailbox name is not valid UTF-8"


def test_inbox_is_case_insensitive_but_other_names_are_not() -> None:
    assert reader(b"inBox").mailbox(utf8=False) == "INBOX"
    assert reader(b"inBox/Sub").mailbox(utf8=False) == "inBox/Sub"


def test_list_mailbox_keeps_wildcards() -> None:
    assert reader(b"%/&AOk-*").list_mailbox(utf8=False) == "%/é*"


# -- response side --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "wire"),
    [
        (None, b"NIL"),
        (0, b"0"),
        (2**63 - 1, b"9223372036854775807"),
        ("plain", b'"plain"'),
        (b'say "hi" \\o/', b'"say \\"hi\\" \\\\o/"'),
        (Atom("\\Seen"), b"\\Seen"),
        (Atom("\\*"), b"\\*"),
        (Encoded(b"BODY[1.TEXT]"), b"BODY[1.TEXT]"),
        (LiteralData(b"a\r\nb"), b"{4}\r\na\r\nb"),
        (LiteralData(b"\x00", binary=True), b"~{1}\r\n\x00"),
        ([Atom("FLAGS"), (Atom("\\Seen"), None), []], b"(FLAGS (\\Seen NIL) ())"),
    ],
)
def test_render_writes_each_value_in_its_wire_form(item: object, wire: bytes) -> None:
    assert render(item) == wire  # type: ignore[arg-type]


def test_render_chooses_a_literal_for_line_breaks_and_long_strings() -> None:
    assert render_string(b"a\r\nb") == b"{4}\r\na\r\nb"
    assert render_string(b"x" * 2000).startswith(b"{2000}\r\n")


def test_eight_bit_text_is_quoted_only_for_utf8_clients() -> None:
    assert render("café") == b"{5}\r\ncaf\xc3\xa9"
    assert render("café", utf8=True) == '"café"'.encode()
    # Not UTF-8 at all: a literal even for UTF-8 clients.
    assert render(b"\xff", utf8=True) == b"{1}\r\n\xff"


def test_render_astring_leaves_atoms_bare() -> None:
    assert render_astring(b"Message-ID") == b"Message-ID"
    assert render_astring(b"two words") == b'"two words"'
    assert render_astring(b"") == b'""'


def test_render_date_time_pads_the_day_with_a_space() -> None:
    moment = datetime(1996, 7, 7, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7, minutes=30)))
    assert render(moment) == b'" 7-Jul-1996 02:44:25 -0730"'


def test_render_refuses_values_without_an_imap_form() -> None:
    with pytest.raises(TypeError):
        render(True)
    with pytest.raises(ValueError, match="out of range"):
        render(-1)
    with pytest.raises(ValueError, match="timezone"):
        format_date_time(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="NUL"):
        literal(b"\x00")
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        quote(b"a\nb")
    with pytest.raises(ValueError, match="cannot span lines"):
        Encoded(b"a\r\nb")


@pytest.mark.parametrize("value", ["", "two words", "(", "\\", "\\Seen foo", "a\x01"])
def test_atom_refuses_anything_but_an_atom_or_flag(value: str) -> None:
    with pytest.raises(ValueError, match="not an atom"):
        Atom(value)


def test_render_sequence_separates_values_with_single_spaces() -> None:
    assert render_sequence([Atom("FETCH"), 1, None]) == b"FETCH 1 NIL"


# -- round trips ----------------------------------------------------------------------------

_STRING_BYTES = st.binary(max_size=1500).filter(lambda data: b"\x00" not in data)


@settings(max_examples=300, deadline=None)
@given(_STRING_BYTES, st.booleans())
def test_any_rendered_string_reads_back_identically(data: bytes, utf8: bool) -> None:
    assert reader(render_string(data, utf8=utf8)).string() == data


@settings(max_examples=300, deadline=None)
@given(_STRING_BYTES)
def test_any_rendered_astring_reads_back_identically(data: bytes) -> None:
    assert reader(render_astring(data)).astring() == data


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)
def test_rendered_date_times_read_back_to_the_same_instant(moment: datetime, minutes: int) -> None:
    aware = moment.replace(microsecond=0, tzinfo=timezone(timedelta(minutes=minutes)))
    parsed = reader(format_date_time(aware)).date_time()
    assert parsed == aware
    assert parsed.utcoffset() == aware.utcoffset()


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00")),
    st.booleans(),
)
def test_rendered_mailbox_names_read_back(name: str, utf8: bool) -> None:
    wire = render(encode_mailbox(name, utf8=utf8), utf8=utf8)
    expected = "INBOX" if name.upper() == "INBOX" else name
    assert reader(wire).mailbox(utf8=utf8) == expected
