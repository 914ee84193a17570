"""Read-model tables. One DDL serves SQLite and PostgreSQL: ids and timestamps are ISO text.

Timestamps are stored as the API shows them (UTC, ``Z``), so reads need no conversion and
text order is time order.
"""

# Primary keys of the projected tables that are not keyed by ``id``.
KEYS = {"report_system_days": ("system_id", "day")}

TABLES = (
    """CREATE TABLE IF NOT EXISTS systems (
        id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        name TEXT NOT NULL,
        hostname TEXT NOT NULL,
        port INTEGER NOT NULL,
        system_type TEXT NOT NULL,
        username TEXT NOT NULL,
        description TEXT NOT NULL,
        is_active BOOLEAN NOT NULL,
        health_status TEXT NOT NULL,
        host_key TEXT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        last_health_check TEXT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        name TEXT NOT NULL,
        command TEXT NOT NULL,
        status TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        scheduled_at TEXT NULL,
        timeout_seconds INTEGER NOT NULL,
        n_executions INTEGER NOT NULL,
        n_started INTEGER NOT NULL DEFAULT 0,
        n_finished INTEGER NOT NULL DEFAULT 0,
        n_completed INTEGER NOT NULL DEFAULT 0,
        cancelled BOOLEAN NOT NULL DEFAULT FALSE
    )""",
    """CREATE TABLE IF NOT EXISTS executions (
        id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        job_id TEXT NOT NULL,
        system_id TEXT NOT NULL,
        system_name TEXT NOT NULL,
        status TEXT NOT NULL,
        scheduled_at TEXT NULL,
        worker_id TEXT NULL,
        started_at TEXT NULL,
        completed_at TEXT NULL,
        exit_code INTEGER NULL,
        stdout TEXT NOT NULL DEFAULT '',
        stderr TEXT NOT NULL DEFAULT '',
        stdout_truncated BOOLEAN NOT NULL DEFAULT FALSE,
        stderr_truncated BOOLEAN NOT NULL DEFAULT FALSE,
        error_message TEXT NULL,
        duration_seconds DOUBLE PRECISION NULL,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
    )""",
    """CREATE TABLE IF NOT EXISTS users (
        id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        username TEXT NOT NULL,
        role TEXT NOT NULL,
        is_active BOOLEAN NOT NULL,
        credentials_version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        credentials_version INTEGER NOT NULL,
        expires_at TEXT NOT NULL,
        revoked BOOLEAN NOT NULL DEFAULT FALSE
    )""",
    """CREATE TABLE IF NOT EXISTS projection_failures (
        projection TEXT NOT NULL,
        position BIGINT NOT NULL,
        topic TEXT NOT NULL,
        error TEXT NOT NULL,
        failed_at TEXT NOT NULL,
        PRIMARY KEY (projection, position)
    )""",
    # Data keys of the vault: deleting a row destroys a system's secrets in the event log.
    """CREATE TABLE IF NOT EXISTS data_keys (
        owner TEXT PRIMARY KEY,
        wrapped TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    # Operational state, not history: each worker's heartbeat and load.
    """CREATE TABLE IF NOT EXISTS workers (
        id TEXT PRIMARY KEY,
        capacity INTEGER NOT NULL,
        running INTEGER NOT NULL,
        heartbeat_at TEXT NOT NULL
    )""",
    # Dashboard figures, maintained as events arrive: reading them is O(1) however many jobs.
    """CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value DOUBLE PRECISION NOT NULL
    )""",
    *(
        f"INSERT INTO counters (name, value) VALUES ('{name}', 0) ON CONFLICT (name) DO NOTHING"
        for name in (
            *(f"systems.{k}" for k in ("total", "active", "healthy", "linux", "windows")),
            *(
                f"jobs.{k}"
                for k in ("total", "pending", "running", "completed", "failed", "cancelled")
            ),
            *(
                f"executions.{k}"
                for k in (
                    "total",
                    "pending",
                    "running",
                    "completed",
                    "failed",
                    "timeout",
                    "cancelled",
                    "duration_sum",
                    "duration_count",
                )
            ),
        )
    ),
)

# Secondary indexes of the projected tables, for the queries. A rebuild builds them after
# filling its tables: in one go that is several times cheaper than row by row.
# The biggest first: a rebuild builds them two at a time.
INDEXES = (
    "CREATE INDEX IF NOT EXISTS executions_job ON executions (job_id, seq)",
    "CREATE INDEX IF NOT EXISTS executions_system ON executions (system_id)",
    "CREATE INDEX IF NOT EXISTS executions_queue ON executions (status, scheduled_at)",
    "CREATE INDEX IF NOT EXISTS jobs_status_seq ON jobs (status, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_created_by_seq ON jobs (created_by, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_seq ON jobs (seq)",
    "CREATE INDEX IF NOT EXISTS systems_seq ON systems (seq)",
)

# The reporting read model (projections/reports.py), with a position of its own.
REPORT_TABLES = (
    # Its executions' rows are derived from the log now, never stored.
    "DROP TABLE IF EXISTS report_executions",
    """CREATE TABLE IF NOT EXISTS report_system_days (
        system_id TEXT NOT NULL,
        day TEXT NOT NULL,
        executions INTEGER NOT NULL,
        completed INTEGER NOT NULL,
        duration_sum DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (system_id, day)
    )""",
)
