//! The agent's state: one SQLite database (WAL, `synchronous=FULL`) in
//! the state directory. Every change commits, and is on disk, before the
//! API answers; the agent holds nothing else that would be lost with it.
//!
//! Resources are rows keyed by id with the resource as JSON beside the
//! columns that need an index or a uniqueness constraint. One writing
//! connection behind a mutex: a check and the write it guards run under
//! one lock, in one transaction, so concurrent requests cannot interleave
//! between them. Reads that guard no write (describes, health, reports)
//! go through a second connection, a [`Reader`]: WAL gives it the last
//! committed state without waiting for a writer, so a describe is never
//! held up by a launch that is starting its VMMs. Work that writes host
//! files from the state (a VMM's security-group or metadata document)
//! stays on the writer: a writer's transaction may change the host before
//! it commits, and such files must match a committed state.
//!
//! A transaction that changes an instance's state says so
//! ([`Tx::note_state_change`]); once it commits, [`Store::state_changes`]
//! watchers hear of it (the reporter), never of a change rolled back.

use std::cell::Cell;
use std::path::Path;
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Schema version in `PRAGMA user_version`; [`Store::open`] migrates up.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA_V1: &str = "
CREATE TABLE images (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE subnets (id TEXT PRIMARY KEY, cidr_block TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE key_pairs (id TEXT PRIMARY KEY, key_name TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
CREATE TABLE security_groups (id TEXT PRIMARY KEY, group_name TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
";

const SCHEMA_V2: &str = "
CREATE TABLE instances (id TEXT PRIMARY KEY, client_token TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX instances_by_client_token ON instances (client_token);
";

/// Named counters that must survive restarts (the report sequence).
const SCHEMA_V3: &str = "
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// A table of resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Images,
    Subnets,
    KeyPairs,
    SecurityGroups,
    Instances,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Images => "images",
            Table::Subnets => "subnets",
            Table::KeyPairs => "key_pairs",
            Table::SecurityGroups => "security_groups",
            Table::Instances => "instances",
        }
    }
}

/// A store failure: the database itself (I/O, corruption), never bad input.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database holds a row that does not parse: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("state database schema version {found} is newer than this agent's ({SCHEMA_VERSION})")]
    TooNew { found: i64 },
    #[error("state database counter {name} holds {value}, not a count")]
    BadCounter { name: String, value: i64 },
}

/// The open database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    /// Durations of commits, for `/metrics` (seconds).
    pub commit_seconds: crate::metrics::Histogram,
    /// Bumped after each commit that changed an instance's state.
    state_changes: tokio::sync::watch::Sender<u64>,
}

impl Store {
    /// Opens (creating if needed) `state.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(dir.join("state.db"))?;
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.pragma_update(None, "synchronous", "full")?;
        conn.pragma_update(None, "foreign_keys", "on")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew { found: version });
        }
        // Each step in one transaction with its version bump.
        for (to, sql) in [(1, SCHEMA_V1), (2, SCHEMA_V2), (3, SCHEMA_V3)] {
            if version < to {
                conn.execute_batch(&format!("BEGIN; {sql} PRAGMA user_version = {to}; COMMIT;"))?;
            }
        }
        Ok(Self {
            conn,
            commit_seconds: crate::metrics::Histogram::default(),
            state_changes: tokio::sync::watch::channel(0).0,
        })
    }

    /// A receiver that wakes after each committed write that changed an
    /// instance's state (several commits between two looks are one
    /// wake-up: the watcher wants "something changed", not each change).
    pub fn state_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state_changes.subscribe()
    }

    /// Runs `f` in one transaction, committed (durably) if it returns Ok.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self.conn.transaction().map_err(StoreError::from)?;
        let mut w = Tx {
            tx,
            state_changed: Cell::new(false),
        };
        let out = f(&mut w)?;
        let Tx { tx, state_changed } = w;
        let start = Instant::now();
        tx.commit().map_err(StoreError::from)?;
        self.commit_seconds.observe(start.elapsed().as_secs_f64());
        if state_changed.get() {
            self.state_changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(out)
    }

    /// Reads with the same helpers (a transaction that is never committed).
    pub fn read<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        read_on(&mut self.conn, f)
    }
}

/// Runs `f` in a transaction on `conn` that is never committed (dropping
/// it rolls back): one consistent snapshot of what was committed when it
/// began.
fn read_on<T, E: From<StoreError>>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let tx = conn.transaction().map_err(StoreError::from)?;
    let mut r = Tx {
        tx,
        state_changed: Cell::new(false),
    };
    f(&mut r)
}

/// A read-only connection to the same database (see the module comment).
#[derive(Debug)]
pub struct Reader {
    conn: Connection,
}

impl Reader {
    /// Opens `state.db` in `dir` for reading; [`Store::open`] must have
    /// made it (and its schema) first.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(dir.join("state.db"))?;
        conn.pragma_update(None, "query_only", "on")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self { conn })
    }

    /// Runs `f` in a read transaction: one consistent snapshot of what was
    /// committed when it began.
    pub fn read<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        read_on(&mut self.conn, f)
    }
}

/// A transaction with typed row helpers.
#[derive(Debug)]
pub struct Tx<'a> {
    tx: Transaction<'a>,
    /// Set by [`Tx::note_state_change`]; acted on after the commit.
    state_changed: Cell<bool>,
}

impl Tx<'_> {
    /// This transaction changes an instance's state: once it commits,
    /// [`Store::state_changes`] watchers are woken (a read transaction,
    /// never committed, wakes nobody).
    pub fn note_state_change(&self) {
        self.state_changed.set(true);
    }

    /// Adds one to the counter `name` (a new counter starts at 0) and
    /// returns the new value: numbers that only rise, across restarts
    /// once the transaction commits.
    pub fn next_in_sequence(&self, name: &str) -> Result<u64, StoreError> {
        let value: i64 = self.tx.query_row(
            "INSERT INTO counters (name, value) VALUES (?1, 1) \
             ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
            params![name],
            |r| r.get(0),
        )?;
        u64::try_from(value).map_err(|_| StoreError::BadCounter {
            name: name.to_string(),
            value,
        })
    }

    /// The resource with `id`, if any.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let body: Option<String> = self
            .tx
            .query_row(
                &format!("SELECT body FROM {} WHERE id = ?1", table.name()),
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
    }

    /// Every resource of `table`, in id order.
    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, StoreError> {
        let mut stmt = self
            .tx
            .prepare(&format!("SELECT body FROM {} ORDER BY id", table.name()))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    /// The rows whose column `column` equals `value`, in id order.
    pub fn list_by<T: DeserializeOwned>(
        &self,
        table: Table,
        column: &str,
        value: &str,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.tx.prepare(&format!(
            "SELECT body FROM {} WHERE {column} = ?1 ORDER BY id",
            table.name()
        ))?;
        let rows = stmt.query_map(params![value], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    /// The id of the row whose unique column `column` equals `value`.
    pub fn id_by(
        &self,
        table: Table,
        column: &str,
        value: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT id FROM {} WHERE {column} = ?1", table.name()),
                params![value],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Inserts or replaces the row `id`; `columns` are the indexed
    /// columns besides the body, as (name, value).
    pub fn put<T: Serialize>(
        &self,
        table: Table,
        id: &str,
        columns: &[(&str, &str)],
        value: &T,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(value)?;
        let names: String = columns.iter().map(|(n, _)| format!(", {n}")).collect();
        let marks: String = (0..columns.len())
            .map(|i| format!(", ?{}", i + 3))
            .collect();
        let updates: String = columns
            .iter()
            .map(|(n, _)| format!(", {n} = excluded.{n}"))
            .collect();
        // An upsert on the id only: a clash on another unique column is an
        // error (INSERT OR REPLACE would delete the other row instead).
        let sql = format!(
            "INSERT INTO {} (id, body{names}) VALUES (?1, ?2{marks}) \
             ON CONFLICT(id) DO UPDATE SET body = excluded.body{updates}",
            table.name()
        );
        let mut values: Vec<&dyn rusqlite::ToSql> = vec![&id, &body];
        for (_, v) in columns {
            values.push(v);
        }
        self.tx.execute(&sql, values.as_slice())?;
        Ok(())
    }

    /// Deletes the row `id`; whether there was one.
    pub fn delete(&self, table: Table, id: &str) -> Result<bool, StoreError> {
        let n = self.tx.execute(
            &format!("DELETE FROM {} WHERE id = ?1", table.name()),
            params![id],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_reopening_and_failed_writes_change_nothing() {
        let dir = std::env::temp_dir().join(format!("stratus-agent-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        {
            let mut s = Store::open(&dir).unwrap();
            s.write(|tx| tx.put(Table::KeyPairs, "key-1", &[("key_name", "a")], &"one"))
                .unwrap();
            // A failing closure rolls its writes back.
            let r: Result<(), StoreError> = s.write(|tx| {
                tx.put(Table::KeyPairs, "key-2", &[("key_name", "b")], &"two")?;
                Err(StoreError::TooNew { found: 9 })
            });
            assert!(r.is_err());
            // The unique column refuses a second row with the same name.
            assert!(s
                .write(|tx| tx.put(Table::KeyPairs, "key-3", &[("key_name", "a")], &"three"))
                .is_err());
        }
        let mut s = Store::open(&dir).unwrap();
        let rows: Vec<String> = s.read(|tx| tx.list(Table::KeyPairs)).unwrap();
        assert_eq!(rows, vec!["one".to_string()]);
        let id = s
            .read(|tx| tx.id_by(Table::KeyPairs, "key_name", "a"))
            .unwrap();
        assert_eq!(id.as_deref(), Some("key-1"));
        assert!(s.write(|tx| tx.delete(Table::KeyPairs, "key-1")).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_2_database_gains_counters_that_survive_reopening() {
        let dir =
            std::env::temp_dir().join(format!("stratus-agent-store-v2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        {
            // A database as the previous agent left it.
            let conn = Connection::open(dir.join("state.db")).unwrap();
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA_V1} {SCHEMA_V2} PRAGMA user_version = 2; COMMIT;"
            ))
            .unwrap();
            conn.execute(
                "INSERT INTO images (id, body) VALUES ('ami-1', '\"kept\"')",
                [],
            )
            .unwrap();
        }
        {
            let mut s = Store::open(&dir).unwrap();
            let v: i64 = s
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, SCHEMA_VERSION);
            let kept: Option<String> = s.read(|tx| tx.get(Table::Images, "ami-1")).unwrap();
            assert_eq!(kept.as_deref(), Some("kept"));
            assert_eq!(s.write(|tx| tx.next_in_sequence("a")).unwrap(), 1);
            assert_eq!(s.write(|tx| tx.next_in_sequence("a")).unwrap(), 2);
            assert_eq!(s.write(|tx| tx.next_in_sequence("b")).unwrap(), 1);
            // A rolled-back transaction takes no number.
            let r: Result<u64, StoreError> = s.write(|tx| {
                tx.next_in_sequence("a")?;
                Err(StoreError::TooNew { found: 9 })
            });
            assert!(r.is_err());
        }
        let mut s = Store::open(&dir).unwrap();
        assert_eq!(s.write(|tx| tx.next_in_sequence("a")).unwrap(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn state_changes_are_signalled_once_committed_only() {
        let dir =
            std::env::temp_dir().join(format!("stratus-agent-store-sig-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Store::open(&dir).unwrap();
        let mut changes = s.state_changes();
        // Noted, then rolled back: nothing.
        let r: Result<(), StoreError> = s.write(|tx| {
            tx.note_state_change();
            Err(StoreError::TooNew { found: 9 })
        });
        assert!(r.is_err());
        s.read(|tx| {
            tx.note_state_change();
            Ok::<_, StoreError>(())
        })
        .unwrap();
        // A commit without a state change: nothing.
        s.write(|tx| tx.put(Table::Images, "ami-1", &[], &"x"))
            .unwrap();
        assert!(!changes.has_changed().unwrap());
        // Two committed changes before the watcher looks: one wake-up.
        for _ in 0..2 {
            s.write(|tx| {
                tx.note_state_change();
                Ok::<_, StoreError>(())
            })
            .unwrap();
        }
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        assert!(!changes.has_changed().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
