"""Decode only the entries of a health answer that were not in the last one.

Pure (no I/O): a cache the watch keeps between two answers of one blocking query. Between two
answers almost every entry is byte for byte the same, in the same place: a change touches one
server's checks. So the answer is only split into its entries' raw JSON (``msgspec.Raw``: views
into the body, no copy, no decoding) and each entry is compared with the last answer's entry in
the same place (a ``memcmp``). Equal bytes reuse the server decoded from them, so the result is
exactly a fresh decode's, and unchanged servers are the same objects from one fleet to the next.
Only the entries that differ are decoded (``parse.server_of``, exactly as the fast path does).

Registrations come and go, which shifts the places: an entry that is not in its place is
compared with the next one as well (one server gone); after two misses in a row the last
answer's entries are indexed by their bytes (an exact match, never a hash alone), and a hit
there puts the comparison back in step. An entry found nowhere is decoded. The raw entries keep
the last body alive (its size) and nothing else. ``docs/performance.md`` has the figures.
"""

from __future__ import annotations

import msgspec

from bolina_scaler.core.model import Server
from bolina_scaler.source.parse import Parsed, distinct, server_of
from bolina_scaler.source.schema import ENTRY, RAW_ENTRIES

__all__ = ["EntryMemo"]


class EntryMemo:
    """The fast path with a memory of the last answer. ``parse`` returns ``None`` where the fast
    path would (the checked path answers then), keeping what it knew."""

    def __init__(self) -> None:
        # The last answer's raw entries (views into that body, which they keep alive: it must
        # never change, and the watch reads every answer into a new buffer), and the server and
        # normalisation notes each decoded to, in the same order.
        self._raws: list[msgspec.Raw] = []
        self._servers: list[Server] = []
        self._notes: list[tuple[str, ...]] = []

    def parse(self, body: bytes | bytearray) -> Parsed | None:
        try:
            raws = RAW_ENTRIES.decode(body)
        except msgspec.DecodeError:
            return None
        old_raws, old_servers, old_notes = self._raws, self._servers, self._notes
        count = len(old_raws)
        by_bytes: dict[bytes, int] | None = None
        servers: list[Server] = []
        entry_notes: list[tuple[str, ...]] = []
        here = misses = 0  # ``here``: where the next entry is expected among the last answer's
        for raw in raws:
            if here < count and raw == old_raws[here]:
                found: int | None = here
            elif here + 1 < count and raw == old_raws[here + 1]:
                found = here + 1
            elif misses and count:
                if by_bytes is None:
                    by_bytes = {bytes(r): n for n, r in enumerate(old_raws)}
                found = by_bytes.get(bytes(raw))
            else:
                found = None
            if found is not None:
                servers.append(old_servers[found])
                entry_notes.append(old_notes[found])
                here, misses = found + 1, 0
                continue
            misses += 1
            try:
                entry = ENTRY.decode(raw)
            except msgspec.DecodeError:
                return None
            notes: list[str] = []
            server = server_of(entry, notes)
            if server is None:
                return None
            servers.append(server)
            entry_notes.append(tuple(notes))
        if not distinct(servers):
            return None
        self._raws, self._servers, self._notes = raws, servers, entry_notes
        return tuple(servers), (), tuple(note for notes in entry_notes if notes for note in notes)
