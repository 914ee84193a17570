"""A batch of events applied in memory, and written to the read models in a few statements.

Handlers read and change rows through ``Rows``: a row is read from the database at most once
per batch, changed in memory as often as the batch's events say, and written once at the end
(new rows in one bulk insert per table, changed rows in one ``executemany`` per table and set
of columns). One event costs about as many statements as a thousand, so catching up with a
long log (a rebuild, a projector back from a pause) runs at bulk-load speed.

Every write of a batch happens in the batch's transaction, with its tracking position. A
catch-up applies a batch while the one before it is still being written: it takes the rows
that one left from memory, and opens its transaction, which waits for that one's commit,
only when it needs the database.

A projection may keep some rows out of the database altogether: rows its handlers need for a
while (what a report knows of an execution from its creation to its end), which the log
itself holds. A batch reads such a *derived* row like any other and changes it in memory, the
next batch takes it from there, and one that finds neither asks the projection to make it
again from the events of the log before the batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from operator import itemgetter
from typing import Any, Protocol

from orca.projections.schema import KEYS
from orca.projections.store import Cursor

Row = dict[str, Any]
Key = Any  # the primary key's value, or a tuple of them for a key of several columns
Handler = Callable[["Rows", Any, int], None]  # rows, the event, its position in the log
LOAD_AT_ONCE = 500  # keys in one query of ``Rows.load`` at most
_UNKNOWN = object()  # not among a batch's rows (None is: there is no such row)


class Log(Protocol):
    def events_of(self, originator_ids: Sequence[str], until: int) -> list[tuple[type, Any]]:
        """The events of these aggregates up to position ``until``, in order, each with the
        class that handlers are chosen by."""
        ...


# A derived table's rows of these keys as the log up to a position leaves them (keys that
# have none are left out).
Derive = Callable[[Log, Sequence["Key"], int], Iterable["Row"]]


@dataclass(frozen=True)
class Projection:
    """A read model: the handlers that fill it, under a name that keys its position."""

    name: str
    handlers: Mapping[type[Any], Handler]
    tables: tuple[str, ...]  # the tables it writes: rebuilt and switched in together
    # How long the live projector lets news gather before it applies them: one transaction
    # for a burst of events, not one for each (a report read by the day can lag a second;
    # the read models a command's answer waits for cannot).
    gather_seconds: float = 0.0
    # Events whose handler reads the row of the event's own aggregate in this table: a batch
    # reads all those rows with one query before it applies its events, not one query each.
    own_rows: Mapping[type[Any], str] = field(default_factory=dict)
    # Tables never written to the database, and how their rows are made from the log.
    derived: Mapping[str, Derive] = field(default_factory=dict)


def ignore(rows: Rows, event: Any, seq: int) -> None:
    """For events that change nothing a projection shows (they are not even decoded)."""


class Rows:
    def __init__(
        self,
        cursor: Callable[[], Cursor],
        before: Rows | None = None,
        derived: Mapping[str, Callable[[Sequence[Key]], Iterable[Row]]] | None = None,
    ) -> None:
        """``cursor`` opens the batch's transaction: when a row must be read from the database,
        or at the latest when the batch is written. ``before``: the batch applied just before
        this one, whose rows this one takes as that batch left them; its writes may still be
        under way (this batch's cursor waits for them), and it must commit for this batch to.
        ``derived``: by table, what makes the rows of a derived table that neither this batch
        nor ``before`` knows, as the log before this batch leaves them."""
        self._open = cursor
        self._cur: Cursor | None = None
        self._before = before
        self._derived = derived or {}
        self._rows: dict[str, dict[Key, Row | None]] = defaultdict(dict)  # None: no such row
        self._new: dict[str, dict[Key, Row]] = defaultdict(dict)
        self._changed: dict[str, dict[Key, set[str]]] = defaultdict(dict)
        self._gone: dict[str, list[Key]] = defaultdict(list)
        # Counters moved by whole numbers are added to where they are (exact in any order);
        # one moved by a fraction needs all of them read, to add in event order.
        self._added: dict[str, int] = {}
        self._counters: dict[str, float] | None = None  # all of them, once one is needed
        self._bumped: set[str] = set()
        self.written: set[str] = set()  # the tables the batch wrote rows of

    @property
    def cursor(self) -> Cursor:
        """The batch's cursor (its transaction is opened now if it is not yet)."""
        if self._cur is None:
            self._cur = self._open()
        return self._cur

    def applied(self) -> None:
        """The batch's events are all applied: the rows of the batch before are not needed
        any more (a chain of batches would otherwise keep every row of a long replay)."""
        self._before = None

    def _known(self, table: str, key: Key) -> bool:
        """Whether the row is known without the database: read or made by this batch, or
        left so by the batch before (taken as a copy: that batch may still be writing it)."""
        rows = self._rows[table]
        if key in rows:
            return True
        if self._before is None:
            return False
        earlier = self._before._rows.get(table)
        if earlier is None or key not in earlier:
            return False
        row = earlier[key]
        rows[key] = None if row is None else dict(row)
        return True

    def get(self, table: str, key: Key) -> Row | None:
        """The row as the events so far leave it; None if there is none. Do not change it
        directly: ``update`` does, and records what to write."""
        rows = self._rows[table]
        row = rows.get(key, _UNKNOWN)
        if row is not _UNKNOWN:
            return row  # type: ignore[return-value]
        if self._known(table, key):
            return rows[key]
        if table in self._derived:
            self.load(table, [key])
            return rows[key]
        cur = self.cursor
        cur.execute(_select_sql(table), _key_params(table, key))
        found = cur.fetchone()
        row = rows[key] = None if found is None else dict(found)
        return row

    def load(self, table: str, keys: Iterable[Key]) -> None:
        """Read these rows (of a table keyed by one column) with as few queries as can be, so
        that ``get`` finds them, or finds that there are none, without a query each."""
        rows, key_of = self._rows[table], _key_of(table)
        wanted = [
            key for key in dict.fromkeys(keys) if key not in rows and not self._known(table, key)
        ]
        if not wanted:
            return
        derive = self._derived.get(table)
        for start in range(0, len(wanted), LOAD_AT_ONCE):
            part = wanted[start : start + LOAD_AT_ONCE]
            if derive is None:
                cur = self.cursor
                cur.execute(_select_many_sql(table, len(part)), tuple(part))
                found: Iterable[Row] = map(dict, cur.fetchall())
            else:
                found = derive(part)
            for row in found:
                rows[key_of(row)] = row
            for key in part:
                rows.setdefault(key, None)

    def insert(self, table: str, row: Row) -> None:
        """A new row, with a value for every column handlers read."""
        key = row["id"] if table not in KEYS else _key_of(table)(row)
        rows = self._rows[table]
        if rows.get(key) is not None:  # as the database would refuse it
            raise KeyError(f"{table} already has a row {key}")
        rows[key] = self._new[table][key] = row

    def update(self, table: str, key: Key, /, **values: Any) -> None:
        row = self.get(table, key)
        if row is None:
            return
        row.update(values)
        if key not in self._new[table]:
            self._changed[table].setdefault(key, set()).update(values)

    def delete(self, table: str, key: Key) -> None:
        if self.get(table, key) is None:
            return
        self._rows[table][key] = None
        self._changed[table].pop(key, None)
        if self._new[table].pop(key, None) is None:
            self._gone[table].append(key)

    def bump(self, *changes: tuple[str, float]) -> None:
        """Move dashboard counters. Whole numbers are added as they come; a fraction (a sum
        of durations) is added in event order, as one UPDATE per event would add it, so that
        the sums come out the same however the log is batched."""
        added = self._added
        for name, delta in changes:
            if not delta:
                continue
            if type(delta) is int and self._counters is None:
                added[name] = added.get(name, 0) + delta
                continue
            counters = self._all_counters()
            if name in counters:
                counters[name] += delta
                self._bumped.add(name)

    def _all_counters(self) -> dict[str, float]:
        if self._counters is None:
            cur = self.cursor
            cur.execute("SELECT name, value FROM counters")
            counters = self._counters = {r["name"]: r["value"] for r in cur.fetchall()}
            for name, delta in self._added.items():
                if name in counters:
                    counters[name] += delta
                    self._bumped.add(name)
            self._added.clear()
        return self._counters

    def select(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        """Rows found by something other than their key (the batch so far included)."""
        self.flush()
        self.cursor.execute(sql, params)
        return [dict(row) for row in self.cursor.fetchall()]

    def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        """A statement on rows found by something other than their key, such as all the
        executions of one system; rows read before it are read again after it."""
        self.flush()
        self.cursor.execute(sql, params)
        # Rows in the database may be among those changed; derived rows are not there.
        for table in [t for t in self._rows if t not in self._derived]:
            del self._rows[table]
        for table in self._derived:
            earlier = {} if self._before is None else self._before._rows.get(table, {})
            for key in earlier:
                self._known(table, key)
        self._before = None
        self._counters = None

    def flush(self) -> None:
        """Write what the batch changed so far (derived rows stay in memory)."""
        for table in self._derived:
            for changes in (self._new, self._changed, self._gone):
                changes.pop(table, None)
        self.written.update(t for d in (self._new, self._changed, self._gone) for t in d if d[t])
        cur = self.cursor
        for table, keys in self._gone.items():
            cur.executemany(_delete_sql(table), [_key_params(table, key) for key in keys])
        for table, new in self._new.items():
            if not new:  # all of them deleted again
                continue
            for columns, values in _by_columns(list(new.values())).items():
                cur.insert_many(table, columns, values)
        for table, changed in self._changed.items():
            rows = self._rows[table]
            updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = defaultdict(list)
            for key, names in changed.items():
                columns = tuple(sorted(names))
                changed_row = rows[key]
                assert changed_row is not None
                updates[columns].append(
                    (*(changed_row[c] for c in columns), *_key_params(table, key))
                )
            for columns, values in updates.items():
                cur.executemany(_update_sql(table, columns), values)
        if self._added:
            cur.executemany(
                "UPDATE counters SET value = value + ? WHERE name = ?",
                [(delta, name) for name, delta in sorted(self._added.items())],
            )
        if self._bumped:
            assert self._counters is not None
            cur.executemany(
                "UPDATE counters SET value = ? WHERE name = ?",
                [(self._counters[name], name) for name in sorted(self._bumped)],
            )
        self._new.clear()
        self._changed.clear()
        self._gone.clear()
        self._added.clear()
        self._bumped.clear()


def _by_columns(rows: list[Row]) -> dict[tuple[str, ...], list[tuple[Any, ...]]]:
    """The rows' values, grouped by their columns. A handler gives all the rows it inserts
    the same columns: when the first row's columns are every row's, one ``itemgetter``
    reads them all."""
    columns = tuple(rows[0])
    if len(columns) > 1 and all(len(row) == len(columns) for row in rows):
        try:  # the same number of columns, and the first row's are all there: the same ones
            return {columns: list(map(itemgetter(*columns), rows))}
        except KeyError:
            pass
    grouped: dict[tuple[str, ...], list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        grouped[tuple(row)].append(tuple(row.values()))
    return grouped


@cache
def _key_of(table: str) -> Callable[[Row], Key]:
    """A row's key: the value of its key column, or a tuple of the values of several."""
    return itemgetter(*KEYS.get(table, ("id",)))


def _key_params(table: str, key: Key) -> tuple[Any, ...]:
    return key if len(KEYS.get(table, ("id",))) > 1 else (key,)


@cache
def _where(table: str) -> str:
    return " AND ".join(f"{column} = ?" for column in KEYS.get(table, ("id",)))


@cache
def _select_sql(table: str) -> str:
    return f"SELECT * FROM {table} WHERE {_where(table)}"


@cache
def _select_many_sql(table: str, count: int) -> str:
    columns = KEYS.get(table, ("id",))
    assert len(columns) == 1, f"{table} is keyed by {columns}: load its rows one by one"
    return f"SELECT * FROM {table} WHERE {columns[0]} IN ({', '.join('?' * count)})"


@cache
def _delete_sql(table: str) -> str:
    return f"DELETE FROM {table} WHERE {_where(table)}"


@cache
def _update_sql(table: str, columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{column} = ?" for column in columns)
    return f"UPDATE {table} SET {sets} WHERE {_where(table)}"
