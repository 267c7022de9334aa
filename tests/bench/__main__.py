"""Run every benchmark: `python -m tests.bench [name ...]`."""

from __future__ import annotations

import sys

from tests.bench import (
    directory_import,
    imap_load,
    retention_purge,
    smtp_ingest,
    store_append,
)

BENCHMARKS = {
    "store-append": store_append.main,
    "directory-import": directory_import.main,
    "smtp-ingest": smtp_ingest.main,
    "retention-purge": retention_purge.main,
    "imap-load": imap_load.main,
}


def main(argv: list[str]) -> None:
    names = argv or list(BENCHMARKS)
    for name in names:
        if name not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
        print(f"== {name}", flush=True)
        BENCHMARKS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
