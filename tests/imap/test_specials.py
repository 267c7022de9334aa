"""Sequence sets, search keys, fetch and store attributes and the other structured
arguments of IMAP commands."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap.specials import (
    AllKey,
    AndKey,
    BinarySection,
    BinarySize,
    BodyKey,
    BodySection,
    DateKey,
    FetchItem,
    FetchModifiers,
    FlagKey,
    HeaderKey,
    ListReturn,
    ListReturnOption,
    ListSelectOption,
    ModSeqKey,
    NotKey,
    OrKey,
    Partial,
    SavedResult,
    SearchKey,
    SearchReturn,
    Section,
    SectionText,
    SequenceKey,
    SequenceRange,
    SequenceSet,
    SizeKey,
    SortCriterion,
    SortKey,
    StatusItem,
    StoreAction,
    StoreMode,
    TextKey,
    ThreadAlgorithm,
    parse_charset,
    parse_fetch_attributes,
    parse_fetch_modifiers,
    parse_known_set,
    parse_list_return_options,
    parse_list_select_options,
    parse_message_set,
    parse_search_keys,
    parse_search_return,
    parse_sequence_set,
    parse_sort_criteria,
    parse_status_items,
    parse_store_action,
    parse_store_modifiers,
    parse_thread_algorithm,
)
from mailserver.imap.wire import ParseError, Reader, render
from tests.imap.framed import reader

T = TypeVar("T")


def parsed(parse: Callable[[Reader], T], wire: bytes) -> T:
    cursor = reader(wire)
    value = parse(cursor)
    cursor.end()
    return value


def refusal(parse: Callable[[Reader], object], wire: bytes) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parsed(parse, wire)
    return caught.value


# -- sequence sets --------------------------------------------------------------------------


def test_sequence_set_reads_numbers_ranges_and_star() -> None:
    assert parsed(parse_sequence_set, b"2,4:7,9,12:*") == SequenceSet(
        (
            SequenceRange(2, 2),
            SequenceRange(4, 7),
            SequenceRange(9, 9),
            SequenceRange(12, None),
        )
    )


def test_reversed_range_means_the_same_messages() -> None:
    forward = parsed(parse_sequence_set, b"4:7")
    backward = parsed(parse_sequence_set, b"7:4")
    assert list(forward.iterate(10)) == list(backward.iterate(10)) == [4, 5, 6, 7]


def test_star_is_the_largest_number_in_use() -> None:
    numbers = parsed(parse_sequence_set, b"3:*")
    assert list(numbers.iterate(5)) == [3, 4, 5]
    assert numbers.contains(5, 5)
    assert not numbers.contains(6, 5)


def test_uid_range_beyond_the_last_uid_still_includes_the_last_uid() -> None:
    # RFC 9051 §9: "559:*" includes the highest UID even when it is below 559.
    uids = parsed(parse_sequence_set, b"559:*")
    assert uids.contains(410, 410)
    assert not uids.contains(409, 410)
    assert list(uids.iterate(410)) == [410]


def test_numbers_beyond_the_largest_are_never_contained_nor_iterated() -> None:
    numbers = parsed(parse_sequence_set, b"1,5:9,3")
    assert list(numbers.iterate(6)) == [1, 3, 5, 6]
    assert not numbers.contains(7, 6)
    assert numbers.highest_explicit() == 9
    assert list(parsed(parse_sequence_set, b"1:*").iterate(0)) == []


def test_overlapping_ranges_are_iterated_once() -> None:
    numbers = parsed(parse_sequence_set, b"5:1,3:8,8,2")
    assert numbers.intervals(100) == [(1, 8)]


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"0", 'expected a message number or *, found "0"'),
        (b"1:", "expected a message number or *, found end of command"),
        (b"1,,2", 'expected a message number or *, found ",2"'),
        (b"4294967296", "number out of range: 4294967296"),
    ],
)
def test_invalid_sequence_sets_are_refused(wire: bytes, reason: str) -> None:
    assert refusal(parse_sequence_set, wire).reason == reason


def test_dollar_is_the_saved_search_result() -> None:
    assert parsed(parse_message_set, b"$") == SavedResult()
    assert SavedResult().encode().value == b"$"


def test_qresync_known_sets_refuse_star() -> None:
    assert "not allowed" in refusal(parse_known_set, b"1:*").reason


@settings(max_examples=300, deadline=None)
@given(st.sets(st.integers(min_value=1, max_value=500), min_size=1))
def test_sequence_set_from_numbers_round_trips(numbers: set[int]) -> None:
    compact = SequenceSet.from_numbers(numbers)
    assert list(compact.iterate(500)) == sorted(numbers)
    assert parsed(parse_sequence_set, render(compact.encode())) == compact


def test_sequence_set_from_numbers_writes_compact_ranges() -> None:
    assert SequenceSet.from_numbers([3, 1, 2, 7, 9, 8]).encode().value == b"1:3,7:9"
    with pytest.raises(ValueError):
        SequenceSet.from_numbers([])


# -- search keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "key"),
    [
        (b"ALL", AllKey()),
        (b"ANSWERED", FlagKey("\\Answered", True)),
        (b"DELETED", FlagKey("\\Deleted", True)),
        (b"DRAFT", FlagKey("\\Draft", True)),
        (b"FLAGGED", FlagKey("\\Flagged", True)),
        (b"SEEN", FlagKey("\\Seen", True)),
        (b"UNANSWERED", FlagKey("\\Answered", False)),
        (b"UNDELETED", FlagKey("\\Deleted", False)),
        (b"UNDRAFT", FlagKey("\\Draft", False)),
        (b"UNFLAGGED", FlagKey("\\Flagged", False)),
        (b"unseen", FlagKey("\\Seen", False)),
        (b"RECENT", FlagKey("\\Recent", True)),
        (b"OLD", FlagKey("\\Recent", False)),
        (b"NEW", AndKey((FlagKey("\\Recent", True), FlagKey("\\Seen", False)))),
        (b"KEYWORD $Forwarded", FlagKey("$Forwarded", True)),
        (b"UNKEYWORD Junk", FlagKey("Junk", False)),
        (b"BCC bob", HeaderKey("Bcc", "bob")),
        (b"CC bob", HeaderKey("Cc", "bob")),
        (b'FROM "Bob Smith"', HeaderKey("From", "Bob Smith")),
        (b"SUBJECT {5}\r\nhello", HeaderKey("Subject", "hello")),
        (b"TO bob", HeaderKey("To", "bob")),
        (b'HEADER Message-ID ""', HeaderKey("Message-ID", "")),
        (b"BODY dose", BodyKey("dose")),
        (b"TEXT ordonnance", TextKey("ordonnance")),
        (b"BEFORE 1-Feb-2024", DateKey("before", date(2024, 2, 1), sent=False)),
        (b"ON 1-Feb-2024", DateKey("on", date(2024, 2, 1), sent=False)),
        (b"SINCE 1-Feb-2024", DateKey("since", date(2024, 2, 1), sent=False)),
        (b"SENTBEFORE 1-Feb-2024", DateKey("before", date(2024, 2, 1), sent=True)),
        (b"SENTON 1-Feb-2024", DateKey("on", date(2024, 2, 1), sent=True)),
        (b'SENTSINCE "1-Feb-2024"', DateKey("since", date(2024, 2, 1), sent=True)),
        (b"LARGER 1024", SizeKey(1024, larger=True)),
        (b"SMALLER 1024", SizeKey(1024, larger=False)),
        (b"1:3", SequenceKey(SequenceSet((SequenceRange(1, 3),)), uid=False)),
        (b"UID 5:*", SequenceKey(SequenceSet((SequenceRange(5, None),)), uid=True)),
        (b"$", SequenceKey(SavedResult(), uid=False)),
        (b"UID $", SequenceKey(SavedResult(), uid=True)),
        (b"MODSEQ 620162338", ModSeqKey(620162338)),
        (b'MODSEQ "/flags/\\\\draft" all 620162338', ModSeqKey(620162338, "\\Draft", "all")),
        (b'MODSEQ "/flags/$Junk" priv 0', ModSeqKey(0, "$Junk", "priv")),
        (b"NOT SEEN", NotKey(FlagKey("\\Seen", True))),
        (
            b"OR SEEN (FLAGGED UID 1)",
            OrKey(
                FlagKey("\\Seen", True),
                AndKey(
                    (
                        FlagKey("\\Flagged", True),
                        SequenceKey(SequenceSet((SequenceRange(1, 1),)), uid=True),
                    )
                ),
            ),
        ),
    ],
)
def test_every_search_key_parses_to_its_typed_form(wire: bytes, key: SearchKey) -> None:
    assert parsed(lambda cursor: parse_search_keys(cursor, None), wire) == key


def test_several_search_keys_must_all_match() -> None:
    assert parsed(lambda cursor: parse_search_keys(cursor, None), b"SEEN DELETED") == AndKey(
        (FlagKey("\\Seen", True), FlagKey("\\Deleted", True))
    )


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"FOO", "unknown search key FOO"),
        (b"SEEN FOO", "unknown search key FOO"),
        (b"FROM", "expected a space, found end of command"),
        (b"OR SEEN", "expected a space, found end of command"),
        (b"()", 'expected a search key, found ")"'),
        (b"LARGER -1", 'expected a number, found "-1"'),
        (b"BEFORE 2024-02-01", 'expected a date such as 1-Feb-2024, found "2024-02-01"'),
        (b"HEADER Subj:ect x", "header field names are printable US-ASCII without colon"),
        (b'MODSEQ "/other/x" all 1', 'MODSEQ entry name must be "/flags/<flag>"'),
        (b'MODSEQ "/flags/\\\\" all 1', 'MODSEQ entry name "/flags/\\" does not name a flag'),
        (b'MODSEQ "/flags/x" mine 1', "MODSEQ entry type must be priv, shared or all, not MINE"),
        (b"NOT " * 40 + b"SEEN", "search criteria are nested too deeply"),
        (b"(" * 40 + b"SEEN" + b")" * 40, "search criteria are nested too deeply"),
    ],
)
def test_invalid_search_keys_are_refused_with_a_reason(wire: bytes, reason: str) -> None:
    assert refusal(lambda cursor: parse_search_keys(cursor, None), wire).reason == reason


def test_search_strings_are_decoded_as_utf8() -> None:
    key = parsed(
        lambda cursor: parse_search_keys(cursor, "UTF-8"), "SUBJECT {8}\r\nrésumé".encode()
    )
    assert key == HeaderKey("Subject", "résumé")


def test_us_ascii_charset_refuses_8bit_search_strings() -> None:
    error = refusal(lambda cursor: parse_search_keys(cursor, "US-ASCII"), b"TEXT {2}\r\n\xc3\xa9")
    assert error.reason == "search string is not US-ASCII as the CHARSET says"


def test_unsupported_charset_is_a_no_with_badcharset() -> None:
    error = refusal(parse_charset, b"ISO-8859-1")
    assert (error.status, error.code) == ("NO", "BADCHARSET (US-ASCII UTF-8)")
    assert parsed(parse_charset, b'"utf-8"') == "UTF-8"


def test_search_return_options_default_to_all_when_empty() -> None:
    assert parsed(parse_search_return, b"()") == {SearchReturn.ALL}
    assert parsed(parse_search_return, b"(MIN MAX COUNT SAVE)") == {
        SearchReturn.MIN,
        SearchReturn.MAX,
        SearchReturn.COUNT,
        SearchReturn.SAVE,
    }
    assert (
        refusal(parse_search_return, b"(PARTIAL)").reason == "unknown SEARCH return option PARTIAL"
    )


# -- fetch attributes -----------------------------------------------------------------------


@pytest.mark.parametrize("item", list(FetchItem))
def test_every_simple_fetch_item_parses(item: FetchItem) -> None:
    assert parsed(parse_fetch_attributes, item.value.lower().encode()) == (item,)


@pytest.mark.parametrize(
    ("wire", "items"),
    [
        (
            b"ALL",
            (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE, FetchItem.ENVELOPE),
        ),
        (b"FAST", (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE)),
        (
            b"full",
            (
                FetchItem.FLAGS,
                FetchItem.INTERNALDATE,
                FetchItem.RFC822_SIZE,
                FetchItem.ENVELOPE,
                FetchItem.BODY,
            ),
        ),
    ],
)
def test_fetch_macros_expand(wire: bytes, items: tuple[FetchItem, ...]) -> None:
    assert parsed(parse_fetch_attributes, wire) == items


@pytest.mark.parametrize(
    ("wire", "attribute", "response_name"),
    [
        (b"BODY[]", BodySection(Section()), b"BODY[]"),
        (b"BODY.PEEK[]<0.1024>", BodySection(Section(), Partial(0, 1024), peek=True), b"BODY[]<0>"),
        (b"BODY[HEADER]", BodySection(Section(text=SectionText.HEADER)), b"BODY[HEADER]"),
        (b"body[text]", BodySection(Section(text=SectionText.TEXT)), b"BODY[TEXT]"),
        (b"BODY[1]", BodySection(Section((1,))), b"BODY[1]"),
        (b"BODY[1.2.3]", BodySection(Section((1, 2, 3))), b"BODY[1.2.3]"),
        (b"BODY[1.2.MIME]", BodySection(Section((1, 2), SectionText.MIME)), b"BODY[1.2.MIME]"),
        (b"BODY[4.TEXT]", BodySection(Section((4,), SectionText.TEXT)), b"BODY[4.TEXT]"),
        (
            b"BODY[HEADER.FIELDS (Date From)]",
            BodySection(Section(text=SectionText.HEADER_FIELDS, headers=("Date", "From"))),
            b"BODY[HEADER.FIELDS (Date From)]",
        ),
        (
            b"BODY.PEEK[2.HEADER.FIELDS.NOT (X-Secret)]<10.20>",
            BodySection(
                Section((2,), SectionText.HEADER_FIELDS_NOT, ("X-Secret",)), Partial(10, 20), True
            ),
            b"BODY[2.HEADER.FIELDS.NOT (X-Secret)]<10>",
        ),
        (b"BINARY[]", BinarySection(()), b"BINARY[]"),
        (b"BINARY.PEEK[1.2]<0.8>", BinarySection((1, 2), Partial(0, 8), True), b"BINARY[1.2]<0>"),
        (b"BINARY.SIZE[3]", BinarySize((3,)), b"BINARY.SIZE[3]"),
    ],
)
def test_section_fetch_attributes_parse_and_name_their_response(
    wire: bytes, attribute: object, response_name: bytes
) -> None:
    (value,) = parsed(parse_fetch_attributes, wire)
    assert value == attribute
    assert value.response_name().value == response_name


def test_fetch_attribute_list_mixes_items_and_sections() -> None:
    assert parsed(parse_fetch_attributes, b"(UID FLAGS BODY.PEEK[HEADER] MODSEQ)") == (
        FetchItem.UID,
        FetchItem.FLAGS,
        BodySection(Section(text=SectionText.HEADER), peek=True),
        FetchItem.MODSEQ,
    )


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"BODY[MIME]", "MIME needs a body part number, as in BODY[1.MIME]"),
        (b"BODY[1.FOO]", "unknown section text FOO"),
        (b"BODY[1.]", 'expected HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME, found "]"'),
        (b"BODY[0]", 'expected a body part number, found "0]"'),
        (b"BODY[HEADER.FIELDS ()]", 'expected a header field name, found ")]"'),
        (b"BODY[]<0.0>", 'expected a non-zero length, found "0>"'),
        (b"BODY[]<5>", 'expected ".", found ">"'),
        (b"BINARY[1.TEXT]", "BINARY takes body part numbers only, as in BINARY[1.2]"),
        (b"BINARY.SIZE", 'expected "[", found end of command'),
        (b"ENVELOPES", "unknown fetch attribute ENVELOPES"),
        (b"()", 'expected a fetch attribute, found ")"'),
    ],
)
def test_invalid_fetch_attributes_are_refused(wire: bytes, reason: str) -> None:
    assert refusal(parse_fetch_attributes, wire).reason == reason


def test_fetch_modifiers_read_changedsince_and_vanished() -> None:
    assert parsed(parse_fetch_modifiers, b"(CHANGEDSINCE 12345 VANISHED)") == FetchModifiers(
        12345, vanished=True
    )
    assert (
        refusal(parse_fetch_modifiers, b"(PARTIAL 1:5)").reason == "unknown FETCH modifier PARTIAL"
    )


# -- store ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "action"),
    [
        (b"FLAGS (\\Seen)", StoreAction(StoreMode.REPLACE, False, ("\\Seen",))),
        (
            b"+FLAGS.SILENT (\\Deleted $Junk)",
            StoreAction(StoreMode.ADD, True, ("\\Deleted", "$Junk")),
        ),
        (b"-flags \\Seen \\Flagged", StoreAction(StoreMode.REMOVE, False, ("\\Seen", "\\Flagged"))),
        (b"FLAGS ()", StoreAction(StoreMode.REPLACE, False, ())),
    ],
)
def test_store_actions_parse(wire: bytes, action: StoreAction) -> None:
    assert parsed(parse_store_action, wire) == action


def test_store_action_refuses_other_attributes() -> None:
    assert refusal(parse_store_action, b"+LABELS (x)").reason == (
        "expected FLAGS or FLAGS.SILENT, found LABELS"
    )


def test_store_modifier_unchangedsince() -> None:
    assert parsed(parse_store_modifiers, b"(UNCHANGEDSINCE 0)") == 0
    assert refusal(parse_store_modifiers, b"(UNCHANGEDSINCE 1 UNCHANGEDSINCE 2)").reason == (
        "UNCHANGEDSINCE given more than once"
    )


# -- STATUS, LIST, SORT, THREAD ---------------------------------------------------------------


def test_every_status_item_parses() -> None:
    wire = b"(" + b" ".join(item.value.encode() for item in StatusItem) + b")"
    assert parsed(parse_status_items, wire) == tuple(StatusItem)
    assert refusal(parse_status_items, b"()").reason == 'expected a STATUS item, found ")"'


def test_list_selection_options_parse_and_recursivematch_needs_a_base_option() -> None:
    assert parsed(parse_list_select_options, b"(SUBSCRIBED RECURSIVEMATCH REMOTE SPECIAL-USE)") == {
        ListSelectOption.SUBSCRIBED,
        ListSelectOption.RECURSIVEMATCH,
        ListSelectOption.REMOTE,
        ListSelectOption.SPECIAL_USE,
    }
    assert parsed(parse_list_select_options, b"()") == frozenset()
    assert refusal(parse_list_select_options, b"(RECURSIVEMATCH)").reason == (
        "RECURSIVEMATCH needs another selection option such as SUBSCRIBED"
    )
    assert (
        refusal(parse_list_select_options, b"(FOO)").reason == "unknown LIST selection option FOO"
    )


def test_list_return_options_include_status_items() -> None:
    assert parsed(
        parse_list_return_options, b"(SUBSCRIBED CHILDREN SPECIAL-USE STATUS (MESSAGES UIDNEXT))"
    ) == ListReturn(
        frozenset(ListReturnOption),
        (StatusItem.MESSAGES, StatusItem.UIDNEXT),
    )


def test_sort_criteria_and_thread_algorithms_parse() -> None:
    assert parsed(parse_sort_criteria, b"(REVERSE ARRIVAL cc DATE FROM SIZE SUBJECT TO)") == (
        SortCriterion(SortKey.ARRIVAL, reverse=True),
        *(SortCriterion(key) for key in list(SortKey)[1:]),
    )
    assert refusal(parse_sort_criteria, b"(REVERSE)").reason == 'expected a space, found ")"'
    assert parsed(parse_thread_algorithm, b"references") is ThreadAlgorithm.REFERENCES
    assert parsed(parse_thread_algorithm, b"ORDEREDSUBJECT") is ThreadAlgorithm.ORDEREDSUBJECT
    assert refusal(parse_thread_algorithm, b"REFS").reason == "unknown THREAD algorithm REFS"
