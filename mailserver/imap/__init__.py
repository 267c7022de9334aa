"""IMAP4rev2 / IMAP4rev1 protocol support.

The wire layer is split the way the protocol is: `framing` cuts the byte stream into
commands, `wire` reads and writes the primitives (atoms, strings, literals, lists),
`specials` parses the structured arguments (sequence sets, search keys, fetch
attributes, ...) and `commands` turns one framed command into one typed command object.
None of them does I/O.
"""
