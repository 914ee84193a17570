"""The library's PostgreSQL recorder, reading the notification log faster.

``select_notifications`` is what projections and the audit log read the whole log with. The
library's fetches dict rows in PostgreSQL's text format (UUIDs and ``state`` parsed from
text); this one fetches tuples in the binary format: the same notifications, ~2x as fast.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventsourcing.persistence import InterfaceError, Notification, OperationalError
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier


class OrcaPostgresRecorder(PostgresApplicationRecorder):
    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        conditions: list[Composed | SQL] = []
        params: list[object] = []
        if start is not None:
            conditions.append(
                SQL("notification_id >= %s" if inclusive_of_start else "notification_id > %s")
            )
            params.append(start)
        if stop is not None:
            conditions.append(SQL("notification_id <= %s"))
            params.append(stop)
        if topics:
            conditions.append(SQL("topic = ANY(%s)"))
            params.append(list(topics))
        statement = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM {schema}.{table}{where} ORDER BY notification_id LIMIT %s"
        ).format(
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
            where=SQL(" WHERE ") + SQL(" AND ").join(conditions) if conditions else SQL(""),
        )
        params.append(limit)
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row, binary=True) as cursor,
        ):
            rows = cursor.execute(statement, params, prepare=True).fetchall()
        return [
            Notification(
                id=notification_id,
                originator_id=originator_id,
                originator_version=originator_version,
                topic=topic,
                state=state,
            )
            for notification_id, originator_id, originator_version, topic, state in rows
        ]
