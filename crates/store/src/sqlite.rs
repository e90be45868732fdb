//! The embedded backend: one SQLite database in WAL mode.
//!
//! Layout:
//! - `kv` is the history log, one row per change. Its integer primary key is
//!   `revision << SUB_BITS | op index`, so rows sort in revision order without a second index,
//!   and the current revision is that of the last row. A delete is a tombstone row
//!   (`deleted = 1`, empty value). `prev_id` points at the live version the row replaced (a
//!   delete event's value comes from it). Compaction at `C` removes tombstones and superseded
//!   versions below `C`, which keeps the `prev_id` of every row above `C`, so watches from `C`
//!   on replay complete events.
//! - `current` maps every live key to its latest row: current reads never scan history. A read
//!   at an older revision `R` takes `current` for keys unchanged since `R` and, for the others,
//!   the `prev_id` of their first change after `R`. History has no key index: each write
//!   touches only the end of `kv` and one entry of `current`.
//! - `meta` holds the compacted revision.
//!
//! One writer thread owns the write connection and commits every pending transaction in one
//! SQLite transaction (group commit). With fsync on, SQLite runs with `synchronous=NORMAL` (a
//! commit only writes the WAL) and a sync thread makes commits durable with one `fdatasync` of
//! the WAL for every commit that finished before it started; only then does it acknowledge
//! them and publish their events, while the writer already applies the next group. That is the
//! guarantee of `synchronous=FULL` with disk and CPU working at once. Reads use a small pool of
//! read connections on blocking threads; WAL lets them run beside the writer. A read that saw a
//! commit not yet durable waits for its sync before answering.
//!
//! Architecture Invariant: the writer thread is the only code that writes the database; the
//! sync thread is the only code that acknowledges writes and publishes events, each batch after
//! it is durable, in revision order.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rusqlite::config::DbConfig;
use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params, params_from_iter};
use tokio::sync::{Semaphore, broadcast, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    Compare, Event, EventKind, KeyValue, Op, RangeRequest, RangeResponse, Result, Revision, Store,
    StoreError, TxnResponse, WatchStream, prefix_end,
};

/// Row ids are `revision << SUB_BITS | op index`: at most 2^20 ops per transaction.
const SUB_BITS: u32 = 20;
/// Most requests the writer commits together.
const MAX_GROUP: usize = 512;
/// Most value bytes the writer commits together (bounds the memory of one group).
const MAX_GROUP_BYTES: usize = 32 << 20;
/// Committed batches kept for slow watchers before they must catch up from the database.
const EVENT_CHANNEL: usize = 256;
/// Rows a watcher replays from the database per read.
const REPLAY_PAGE: usize = 1000;
/// Rows one compaction step examines (one short write transaction each).
const COMPACTION_STEP: i64 = 2000;
/// Read connections kept open; also the most concurrent reads.
const READERS: usize = 4;
/// Statements each connection keeps prepared (the writer uses about a dozen).
const STATEMENT_CACHE: usize = 32;

fn row_id(revision: Revision, index: usize) -> i64 {
    (revision << SUB_BITS) | index as i64
}

fn revision_of(id: i64) -> Revision {
    id >> SUB_BITS
}

/// Tuning of the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Sync every commit to disk before acknowledging it, so acknowledged writes survive power
    /// loss. Without it they still survive a crash of the process.
    pub fsync: bool,
    /// How often history is compacted automatically; zero turns it off.
    pub compaction_interval: Duration,
    /// Revisions of history automatic compaction keeps.
    pub compaction_keep: i64,
    /// Page cache per connection, in KiB (there are up to five connections).
    pub cache_kib: u32,
    /// Largest size the database may reach, like etcd's backend quota; writes past it fail
    /// with [`StoreError::NoSpace`]. `None` means as large as the disk allows.
    pub quota_bytes: Option<u64>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            fsync: true,
            compaction_interval: Duration::from_secs(5 * 60),
            compaction_keep: 1000,
            cache_kib: 2048,
            quota_bytes: None,
        }
    }
}

/// The embedded store. Dropping it stops the writer thread after its current group.
pub struct SqliteStore {
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    syncer: Option<JoinHandle<()>>,
    reads: Arc<ReadPool>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    revisions: Arc<Revisions>,
    // Held (and flock'ed) for the life of the store so two processes never write one database.
    _lock: File,
}

struct Revisions {
    /// The last durable (acknowledged) revision.
    current: AtomicI64,
    compacted: AtomicI64,
    /// The durable revision, for reads to wait on; `Err` once a sync failed.
    durable: watch::Sender<Result<Revision, String>>,
}

impl Revisions {
    /// Waits until `revision` is durable, so a read never answers with a commit that a power
    /// loss could still undo.
    async fn durable(&self, revision: Revision) -> Result<()> {
        if self.current.load(Ordering::SeqCst) >= revision {
            return Ok(());
        }
        let mut durable = self.durable.subscribe();
        let reached = durable
            .wait_for(|d| d.as_ref().map_or(true, |d| *d >= revision))
            .await
            .map_err(|_| StoreError::Closed)?;
        match &*reached {
            Ok(_) => Ok(()),
            Err(e) => Err(StoreError::Backend(e.clone())),
        }
    }
}

/// Makes the WAL durable; a test replaces it to watch the order of syncs and answers.
type SyncWal = Box<dyn FnMut() -> io::Result<()> + Send>;

enum Request {
    Txn {
        compares: Vec<Compare>,
        ops: Vec<Op>,
        reply: oneshot::Sender<Result<TxnResponse>>,
    },
    Compact {
        revision: Revision,
        /// None for automatic compaction.
        reply: Option<oneshot::Sender<Result<()>>>,
    },
}

impl SqliteStore {
    /// Open (or create) the database at `path` and start its writer and sync threads.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self> {
        Self::open_with(path, options, None)
    }

    fn open_with(path: &Path, options: SqliteOptions, sync: Option<SyncWal>) -> Result<Self> {
        let name = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!("creating directory {}: {e}", dir.display()))
            })?;
        }
        let lock_path = PathBuf::from(format!("{name}-lock"));
        let lock = File::create(&lock_path).map_err(|e| {
            StoreError::Backend(format!("creating lock file {}: {e}", lock_path.display()))
        })?;
        lock.try_lock().map_err(|e| {
            StoreError::Backend(format!("database {name} is in use by another process: {e}"))
        })?;

        let conn = Connection::open(path).ctx(&name, "opening the database")?;
        // auto_vacuum only takes effect on a new database, before anything is written to it.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .ctx(&name, "enabling incremental vacuum")?;
        configure(&conn, &name, &options)?;
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS kv (
                 id INTEGER PRIMARY KEY,
                 key BLOB NOT NULL,
                 value BLOB NOT NULL,
                 create_revision INTEGER NOT NULL,
                 prev_id INTEGER,
                 deleted INTEGER NOT NULL
             );
             -- Earlier versions indexed history by key; it doubled the pages of every write.
             DROP INDEX IF EXISTS kv_key;
             CREATE TABLE IF NOT EXISTS current (
                 key BLOB PRIMARY KEY,
                 id INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (
                 name TEXT PRIMARY KEY,
                 value INTEGER NOT NULL
             ) WITHOUT ROWID;
             INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
             COMMIT;",
        )
        .ctx(&name, "creating the schema")?;
        if let Some(quota) = options.quota_bytes {
            let page_size: i64 = conn
                .pragma_query_value(None, "page_size", |r| r.get(0))
                .ctx(&name, "reading the page size")?;
            let pages = (quota / page_size.max(1) as u64).max(1) as i64;
            conn.pragma_update(None, "max_page_count", pages)
                .ctx(&name, "setting the quota")?;
        }
        let (current, compacted) = read_meta(&conn).ctx(&name, "reading revisions")?;
        let revisions = Arc::new(Revisions {
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
            durable: watch::Sender::new(Ok(current)),
        });
        // The WAL exists once the connection has read the database in WAL mode. The sync
        // thread keeps its own descriptor: checkpoints empty the file but never replace it
        // while the writer's connection is open.
        let sync = match (sync, options.fsync) {
            (Some(sync), _) => Some(sync),
            (None, false) => None,
            (None, true) => {
                let wal_path = format!("{name}-wal");
                let wal = File::open(&wal_path).map_err(|e| {
                    StoreError::Backend(format!("opening the write-ahead log {wal_path}: {e}"))
                })?;
                Some(Box::new(move || wal.sync_data()) as SyncWal)
            }
        };

        let reads = Arc::new(ReadPool {
            path: path.to_path_buf(),
            name: name.clone(),
            cache_kib: options.cache_kib,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(READERS)),
        });
        // Open one reader now so a broken path fails here, not on the first read.
        let reader = reads.connect()?;
        reads.put_back(reader);

        let (events, _) = broadcast::channel(EVENT_CHANNEL);
        let (requests, rx) = mpsc::channel();
        let (committed, commits) = mpsc::channel();
        let auto = !options.compaction_interval.is_zero();
        let syncer = Syncer {
            name: name.clone(),
            sync,
            failed: None,
            revisions: revisions.clone(),
            events: events.clone(),
        };
        let syncer = std::thread::Builder::new()
            .name("store-sync".into())
            .spawn(move || syncer.run(commits))
            .map_err(|e| StoreError::Backend(format!("starting the sync of {name}: {e}")))?;
        let writer = Writer {
            conn,
            name: name.clone(),
            current,
            compacted,
            revisions: revisions.clone(),
            committed,
            compaction: None,
            interval: options.compaction_interval,
            keep: options.compaction_keep.max(0),
            next_auto: auto.then(|| Instant::now() + options.compaction_interval),
        };
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Backend(format!("starting the writer of {name}: {e}")))?;
        tracing::info!(path = %path.display(), current, compacted, "opened sqlite store");
        Ok(Self {
            requests: Some(requests),
            writer: Some(writer),
            syncer: Some(syncer),
            reads,
            events,
            revisions,
            _lock: lock,
        })
    }

    fn send(&self, request: Request) -> Result<()> {
        self.requests
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(request)
            .map_err(|_| StoreError::Closed)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel makes the writer finish its group and exit, and then the sync
        // thread finish what the writer committed.
        self.requests.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("sqlite store writer thread panicked");
        }
        if let Some(syncer) = self.syncer.take()
            && syncer.join().is_err()
        {
            tracing::error!("sqlite store sync thread panicked");
        }
    }
}

fn configure(conn: &Connection, name: &str, options: &SqliteOptions) -> Result<()> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .ctx(name, "enabling WAL")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "database {name} cannot use WAL (journal mode stays {mode})"
        )));
    }
    // With fsync on, the sync thread makes each commit durable (see the module docs); NORMAL
    // still syncs around checkpoints, so the WAL never lands in the database unsynced.
    let sync = if options.fsync { "NORMAL" } else { "OFF" };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync};
         PRAGMA cache_size = -{};
         PRAGMA journal_size_limit = {};
         PRAGMA foreign_keys = OFF;",
        options.cache_kib.max(64),
        16 << 20
    ))
    .ctx(name, "configuring the connection")?;
    prepare_once(conn, name)?;
    conn.busy_timeout(Duration::from_secs(5))
        .ctx(name, "setting the busy timeout")
}

/// Keeps statements prepared: a cache large enough for all of them, and no re-planning when
/// bound values change (SQLite built with STAT4 would otherwise re-prepare the key lookups on
/// every new key).
fn prepare_once(conn: &Connection, name: &str) -> Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .ctx(name, "fixing query plans")
        .map(|_| ())
}

/// The current revision (that of the last history row; compaction never removes it) and the
/// compacted one. Databases of earlier versions also recorded the current revision in `meta`.
fn read_meta(conn: &Connection) -> rusqlite::Result<(Revision, Revision)> {
    conn.prepare_cached(&format!(
        "SELECT max(coalesce((SELECT max(id) FROM kv) >> {SUB_BITS}, 0),
                    coalesce((SELECT value FROM meta WHERE name = 'revision'), 0)),
                (SELECT value FROM meta WHERE name = 'compacted')"
    ))?
    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// Maps SQLite errors to store errors: a full disk is `NoSpace`, everything else `Backend`.
trait Context<T> {
    fn ctx(self, name: &str, what: &str) -> Result<T>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn ctx(self, name: &str, what: &str) -> Result<T> {
        self.map_err(|e| store_error(&e, name, what))
    }
}

fn store_error(e: &rusqlite::Error, name: &str, what: &str) -> StoreError {
    if e.sqlite_error_code() == Some(ErrorCode::DiskFull) {
        StoreError::NoSpace {
            path: name.to_string(),
        }
    } else {
        StoreError::Backend(format!("{what} in {name}: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

struct ReadPool {
    path: PathBuf,
    name: String,
    cache_kib: u32,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    fn connect(&self) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)
            .ctx(&self.name, "opening a read connection")?;
        conn.execute_batch(&format!(
            "PRAGMA query_only = ON; PRAGMA cache_size = -{};",
            self.cache_kib.max(64)
        ))
        .ctx(&self.name, "configuring a read connection")?;
        prepare_once(&conn, &self.name)?;
        conn.busy_timeout(Duration::from_secs(5))
            .ctx(&self.name, "setting the busy timeout")?;
        Ok(conn)
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < READERS {
            idle.push(conn);
        }
    }

    /// Run `read` on a pooled connection inside one read transaction (one snapshot).
    async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, &str) -> Result<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = pool.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => pool.connect()?,
            };
            let out = match conn.transaction() {
                Ok(tx) => read(&tx, &pool.name),
                Err(e) => Err(store_error(&e, &pool.name, "starting a read")),
            };
            pool.put_back(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task of {} failed: {e}", self.name)))?
    }
}

/// A key range `[lo, hi)` (or `(lo, hi)`), `hi = None` meaning no end.
struct Bounds {
    lo: Vec<u8>,
    lo_exclusive: bool,
    hi: Option<Vec<u8>>,
}

impl Bounds {
    fn new(key: &str, prefix: bool) -> Self {
        let lo = key.as_bytes().to_vec();
        let hi = if prefix {
            Some(prefix_end(key)).filter(|end| end.as_slice() != [0])
        } else {
            // The only key in [key, key + "\0") is key itself.
            let mut end = lo.clone();
            end.push(0);
            Some(end)
        };
        Self {
            lo,
            lo_exclusive: false,
            hi,
        }
    }

    fn after(mut self, start_after: Option<&str>) -> Self {
        if let Some(after) = start_after
            && after.as_bytes() >= self.lo.as_slice()
        {
            self.lo = after.as_bytes().to_vec();
            self.lo_exclusive = true;
        }
        self
    }

    /// SQL conditions on `column`, appending their parameters.
    fn sql(&self, column: &str, params: &mut Vec<Value>) -> String {
        let op = if self.lo_exclusive { ">" } else { ">=" };
        params.push(Value::Blob(self.lo.clone()));
        let mut sql = format!("{column} {op} ?{}", params.len());
        if let Some(hi) = &self.hi {
            params.push(Value::Blob(hi.clone()));
            sql.push_str(&format!(" AND {column} < ?{}", params.len()));
        }
        sql
    }
}

fn key_string(bytes: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

fn range_at(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    req: &RangeRequest,
) -> Result<RangeResponse> {
    let (current, compacted) = read_meta(tx).ctx(name, "reading revisions")?;
    if req.revision > current {
        return Err(StoreError::FutureRevision {
            requested: req.revision,
            current,
        });
    }
    if req.revision > 0 && req.revision < compacted {
        return Err(StoreError::Compacted {
            requested: req.revision,
            compacted,
        });
    }
    let latest = req.revision == 0 || req.revision == current;
    let revision = if req.revision == 0 {
        current
    } else {
        req.revision
    };
    let all = Bounds::new(&req.key, req.prefix);
    let page = Bounds::new(&req.key, req.prefix).after(req.start_after.as_deref());

    // Latest versions come from `current`. At an older revision, a key unchanged since has its
    // current version (if any); a changed one the version its first later change replaced (if
    // any: none means it did not exist then). That reads `current` and the history after the
    // revision, never older history.
    let select = |bounds: &Bounds, params: &mut Vec<Value>| -> String {
        if latest {
            let cond = bounds.sql("c.key", params);
            format!("FROM current c JOIN kv k ON k.id = c.id WHERE {cond} ORDER BY c.key")
        } else {
            params.push(Value::Integer(row_id(revision + 1, 0)));
            let after = params.len();
            let unchanged = bounds.sql("c.key", params);
            let changed = bounds.sql("key", params);
            format!(
                "FROM (SELECT c.key AS key, c.id AS id FROM current c
                       WHERE {unchanged} AND c.id < ?{after}
                       UNION ALL
                       SELECT t.key, p.prev_id FROM
                           (SELECT key, min(id) AS first FROM kv WHERE id >= ?{after} AND {changed}
                            GROUP BY key) t
                       JOIN kv p ON p.id = t.first WHERE p.prev_id IS NOT NULL) v
                 JOIN kv k ON k.id = v.id ORDER BY v.key"
            )
        }
    };

    let mut params = Vec::new();
    let count_sql = if latest {
        // The key index alone answers this; no need to touch the values.
        format!(
            "SELECT count(*) FROM current WHERE {}",
            all.sql("key", &mut params)
        )
    } else {
        format!("SELECT count(*) {}", select(&all, &mut params))
    };
    let count: i64 = tx
        .prepare_cached(&count_sql)
        .and_then(|mut s| s.query_row(params_from_iter(params), |r| r.get(0)))
        .ctx(name, "counting keys")?;
    if req.count_only {
        return Ok(RangeResponse {
            kvs: Vec::new(),
            more: false,
            count,
            revision,
        });
    }

    let mut params = Vec::new();
    let limit = if req.limit == 0 {
        -1
    } else {
        req.limit as i64 + 1
    };
    let from = select(&page, &mut params);
    params.push(Value::Integer(limit));
    let sql = format!(
        "SELECT k.key, k.value, k.create_revision, k.id {from} LIMIT ?{}",
        params.len()
    );
    let mut kvs = tx
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(params_from_iter(params), |r| {
                Ok(KeyValue {
                    key: key_string(r.get(0)?)?,
                    value: Bytes::from(r.get::<_, Vec<u8>>(1)?),
                    create_revision: r.get(2)?,
                    mod_revision: revision_of(r.get(3)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .ctx(name, "reading keys")?;
    let more = req.limit > 0 && kvs.len() > req.limit;
    kvs.truncate(if req.limit > 0 { req.limit } else { kvs.len() });
    Ok(RangeResponse {
        kvs,
        more,
        count,
        revision,
    })
}

/// Events with revisions in `(after, target]` under `prefix`, at most about one page; never
/// splits a revision. Returns the events and the revision they cover up to.
fn events_page(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    prefix: &Bounds,
    after: Revision,
    target: Revision,
) -> Result<(Vec<Event>, Revision)> {
    let (_, compacted) = read_meta(tx).ctx(name, "reading revisions")?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let query = |from: Revision, to: Revision, limit: i64| -> Result<Vec<(i64, Event)>> {
        let mut params = vec![
            Value::Integer(row_id(from, 0)),
            Value::Integer(row_id(to + 1, 0)),
        ];
        let cond = prefix.sql("k.key", &mut params);
        params.push(Value::Integer(limit));
        let sql = format!(
            "SELECT k.id, k.key, k.value, k.create_revision, k.deleted,
                    p.id, p.value, p.create_revision
             FROM kv k LEFT JOIN kv p ON p.id = k.prev_id
             WHERE k.id >= ?1 AND k.id < ?2 AND {cond} ORDER BY k.id LIMIT ?{}",
            params.len()
        );
        tx.prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_map(params_from_iter(params), |r| {
                    let id: i64 = r.get(0)?;
                    let key = key_string(r.get(1)?)?;
                    let prev = match r.get::<_, Option<i64>>(5)? {
                        Some(prev_id) => Some(KeyValue {
                            key: key.clone(),
                            value: Bytes::from(r.get::<_, Vec<u8>>(6)?),
                            create_revision: r.get(7)?,
                            mod_revision: revision_of(prev_id),
                        }),
                        None => None,
                    };
                    let deleted: bool = r.get(4)?;
                    // A delete carries the last value, which its tombstone takes from prev.
                    let value = match (&prev, deleted) {
                        (Some(prev), true) => prev.value.clone(),
                        _ => Bytes::from(r.get::<_, Vec<u8>>(2)?),
                    };
                    Ok((
                        id,
                        Event {
                            kind: if deleted {
                                EventKind::Delete
                            } else {
                                EventKind::Put
                            },
                            kv: KeyValue {
                                key,
                                value,
                                create_revision: r.get(3)?,
                                mod_revision: revision_of(id),
                            },
                            prev,
                        },
                    ))
                })?
                .collect()
            })
            .ctx(name, "reading history")
    };
    let mut rows = query(after + 1, target, REPLAY_PAGE as i64)?;
    if rows.len() < REPLAY_PAGE {
        return Ok((rows.into_iter().map(|(_, e)| e).collect(), target));
    }
    // A full page may end inside a revision: read that revision whole.
    let last = revision_of(rows.last().map_or(0, |(id, _)| *id));
    rows.retain(|(id, _)| revision_of(*id) < last);
    rows.extend(query(last, last, -1)?);
    Ok((rows.into_iter().map(|(_, e)| e).collect(), last))
}

// ---------------------------------------------------------------------------------------------
// Watch

async fn watch_loop(
    reads: Arc<ReadPool>,
    revisions: Arc<Revisions>,
    mut live: broadcast::Receiver<Arc<Vec<Event>>>,
    prefix: String,
    mut last: Revision,
    out: tokio::sync::mpsc::Sender<Result<Vec<Event>>>,
) {
    let bounds = Arc::new(Bounds::new(&prefix, true));
    loop {
        // `live` was subscribed before this replay started, so every commit is either in the
        // replayed snapshot (revision <= target, skipped below) or arrives on `live`.
        let target = revisions.current.load(Ordering::SeqCst);
        while last < target {
            let b = bounds.clone();
            let from = last;
            let page = reads
                .read(move |tx, name| events_page(tx, name, &b, from, target))
                .await;
            match page {
                Ok((events, reached)) => {
                    last = reached;
                    if !events.is_empty() && out.send(Ok(events)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            }
        }
        loop {
            let batch = tokio::select! {
                _ = out.closed() => return,
                batch = live.recv() => batch,
            };
            match batch {
                Ok(batch) => {
                    let events: Vec<Event> = batch
                        .iter()
                        .filter(|e| e.kv.mod_revision > last && e.kv.key.starts_with(&prefix))
                        .cloned()
                        .collect();
                    if let Some(end) = batch.last() {
                        last = last.max(end.kv.mod_revision);
                    }
                    if !events.is_empty() && out.send(Ok(events)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Too slow for the channel: catch up from the database instead.
                    tracing::debug!(prefix, last, missed, "watcher lagged; replaying history");
                    live = live.resubscribe();
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = out.send(Err(StoreError::Closed)).await;
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

struct Writer {
    conn: Connection,
    name: String,
    /// The last committed revision (durable once the sync thread got to it).
    current: Revision,
    compacted: Revision,
    revisions: Arc<Revisions>,
    committed: mpsc::Sender<Committed>,
    compaction: Option<Compaction>,
    interval: Duration,
    keep: i64,
    next_auto: Option<Instant>,
}

/// Physical removal of history below `revision`, done in short steps between write groups.
struct Compaction {
    revision: Revision,
    cursor: i64,
    removed: u64,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

/// Commits on their way to the sync thread: answered once durable.
struct Committed {
    revision: Revision,
    events: Vec<Event>,
    replies: Vec<Reply>,
}

enum Reply {
    Txn(oneshot::Sender<Result<TxnResponse>>, Result<TxnResponse>),
    Compact(oneshot::Sender<Result<()>>, Result<()>),
}

impl Reply {
    fn send(self) {
        // A caller that went away no longer needs its answer.
        match self {
            Reply::Txn(reply, result) => {
                let _ = reply.send(result);
            }
            Reply::Compact(reply, result) => {
                let _ = reply.send(result);
            }
        }
    }

    fn fail(self, err: StoreError) {
        match self {
            Reply::Txn(reply, _) => {
                let _ = reply.send(Err(err));
            }
            Reply::Compact(reply, _) => {
                let _ = reply.send(Err(err));
            }
        }
    }
}

/// What one request of a group came to.
enum Outcome {
    Txn(Result<TxnResponse>),
    Compact(Result<Revision>),
}

/// A group applied and committed.
struct Applied {
    revision: Revision,
    compacted: Revision,
    events: Vec<Event>,
    /// One per request, in request order.
    outcomes: Vec<Outcome>,
}

enum GroupError {
    /// A transaction failed in a group run without savepoints; nothing was committed, run the
    /// group again with them.
    Retry,
    /// Nothing of the group stands.
    Failed(StoreError),
}

/// The live version of a key, as stored.
struct Live {
    id: i64,
    kv: KeyValue,
}

impl Writer {
    fn run(mut self, requests: mpsc::Receiver<Request>) {
        loop {
            let first = if self.compaction.is_some() {
                match requests.try_recv() {
                    Ok(r) => Some(r),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            } else if let Some(at) = self.next_auto {
                match requests.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(r) => Some(r),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match requests.recv() {
                    Ok(r) => Some(r),
                    Err(_) => break,
                }
            };
            if let Some(first) = first {
                let mut group = vec![first];
                let mut bytes = 0;
                while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
                    let Ok(next) = requests.try_recv() else { break };
                    if let Request::Txn { ops, .. } = &next {
                        bytes += ops
                            .iter()
                            .map(|op| match op {
                                Op::Put { key, value } => key.len() + value.len(),
                                Op::Delete { key } => key.len(),
                            })
                            .sum::<usize>();
                    }
                    group.push(next);
                }
                self.commit_group(group);
            }
            // One step per loop: compaction progresses even under steady load.
            if self.compaction.is_some() {
                self.compaction_step();
            } else if self.next_auto.is_some_and(|at| at <= Instant::now()) {
                self.next_auto = Some(Instant::now() + self.interval);
                let target = self.current - self.keep;
                if target > self.compacted {
                    self.commit_group(vec![Request::Compact {
                        revision: target,
                        reply: None,
                    }]);
                }
            }
        }
        tracing::debug!(path = self.name, "sqlite store writer stopped");
    }

    /// A statement without results, prepared once per connection.
    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(|_| ())
    }

    fn rollback(&self) {
        if !self.conn.is_autocommit() {
            let _ = self.exec("ROLLBACK");
        }
    }

    /// Hands answers to the sync thread, which sends them once everything committed so far
    /// is durable.
    fn acknowledge(&self, committed: Committed) {
        // The sync thread outlives the writer; if it is gone, the callers see `Closed`.
        let _ = self.committed.send(committed);
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        let failed = self.revisions.durable.borrow().as_ref().err().cloned();
        if let Some(msg) = failed {
            // After a failed sync, committed data may be lost: take no more writes.
            for request in group {
                reply_error(request, StoreError::Backend(msg.clone()));
            }
            return;
        }
        // Transactions rarely fail, so a group first runs without a savepoint per
        // transaction; if one fails, it runs again with them.
        let applied = match self.apply_group(&group, false) {
            Err(GroupError::Retry) => self.apply_group(&group, true),
            other => other,
        };
        let applied = match applied {
            Ok(applied) => applied,
            Err(GroupError::Retry) => unreachable!("a group with savepoints is never retried"),
            Err(GroupError::Failed(err)) => {
                tracing::warn!(path = self.name, error = %err, "sqlite store write group failed");
                for request in group {
                    reply_error(request, duplicate(&err));
                }
                return;
            }
        };
        self.current = applied.revision;
        self.compacted = applied.compacted;
        self.revisions
            .compacted
            .store(applied.compacted, Ordering::SeqCst);
        let mut replies = Vec::with_capacity(group.len());
        for (request, outcome) in group.into_iter().zip(applied.outcomes) {
            match (request, outcome) {
                (Request::Txn { reply, .. }, Outcome::Txn(result)) => {
                    replies.push(Reply::Txn(reply, result));
                }
                (Request::Compact { reply, .. }, Outcome::Compact(Err(e))) => match reply {
                    Some(reply) => replies.push(Reply::Compact(reply, Err(e))),
                    None => tracing::warn!(path = self.name, error = %e, "automatic compaction"),
                },
                (Request::Compact { reply, .. }, Outcome::Compact(Ok(target))) => {
                    // A newer target restarts the scan: rows below the cursor may now be
                    // superseded too.
                    let compaction = self.compaction.get_or_insert(Compaction {
                        revision: target,
                        cursor: 0,
                        removed: 0,
                        waiters: Vec::new(),
                    });
                    if target > compaction.revision {
                        compaction.revision = target;
                        compaction.cursor = 0;
                    }
                    compaction.waiters.extend(reply);
                }
                _ => unreachable!("one outcome per request, in request order"),
            }
        }
        self.acknowledge(Committed {
            revision: applied.revision,
            events: applied.events,
            replies,
        });
    }

    /// Applies a group in one SQLite transaction and commits it.
    fn apply_group(&self, group: &[Request], savepoints: bool) -> Result<Applied, GroupError> {
        self.exec("BEGIN IMMEDIATE")
            .map_err(|e| GroupError::Failed(store_error(&e, &self.name, "starting a write")))?;
        let mut revision = self.current;
        let mut compacted = self.compacted;
        let mut events = Vec::new();
        let mut outcomes = Vec::with_capacity(group.len());
        for request in group {
            let outcome = match request {
                Request::Txn { compares, ops, .. } => {
                    let result = if savepoints {
                        self.apply_savepoint(revision + 1, compares, ops, &mut events)
                    } else {
                        match self.apply(revision + 1, compares, ops, &mut events) {
                            Ok(resp) => Ok(resp),
                            Err(_) => {
                                self.rollback();
                                return Err(GroupError::Retry);
                            }
                        }
                    };
                    if let Ok(resp) = &result {
                        revision = resp.revision;
                    }
                    Outcome::Txn(result)
                }
                Request::Compact {
                    revision: target, ..
                } => {
                    let result = if *target <= compacted {
                        Err(StoreError::Compacted {
                            requested: *target,
                            compacted,
                        })
                    } else if *target > revision {
                        Err(StoreError::FutureRevision {
                            requested: *target,
                            current: revision,
                        })
                    } else {
                        self.conn
                            .prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'compacted'")
                            .and_then(|mut s| s.execute(params![target]))
                            .ctx(&self.name, "recording the compacted revision")
                            .map(|_| *target)
                    };
                    if let Ok(target) = &result {
                        compacted = *target;
                    }
                    Outcome::Compact(result)
                }
            };
            // SQLite rolls the whole transaction back on some errors (a full disk).
            if self.conn.is_autocommit() {
                let err = match &outcome {
                    Outcome::Txn(Err(e)) | Outcome::Compact(Err(e)) => duplicate(e),
                    _ => StoreError::Backend(format!("write transaction of {} ended", self.name)),
                };
                return Err(GroupError::Failed(err));
            }
            outcomes.push(outcome);
        }
        if let Err(e) = self.exec("COMMIT") {
            self.rollback();
            return Err(GroupError::Failed(store_error(
                &e,
                &self.name,
                "committing writes",
            )));
        }
        Ok(Applied {
            revision,
            compacted,
            events,
            outcomes,
        })
    }

    /// Apply one transaction inside a savepoint, so a failure undoes only this one.
    fn apply_savepoint(
        &self,
        next: Revision,
        compares: &[Compare],
        ops: &[Op],
        events: &mut Vec<Event>,
    ) -> Result<TxnResponse> {
        self.exec("SAVEPOINT txn")
            .ctx(&self.name, "starting a transaction")?;
        let mark = events.len();
        match self.apply(next, compares, ops, events) {
            Ok(resp) => {
                self.exec("RELEASE txn")
                    .ctx(&self.name, "finishing a transaction")?;
                Ok(resp)
            }
            Err(e) => {
                events.truncate(mark);
                if !self.conn.is_autocommit() {
                    let _ = self
                        .exec("ROLLBACK TO txn")
                        .and_then(|()| self.exec("RELEASE txn"));
                }
                Err(store_error(&e, &self.name, "applying a transaction"))
            }
        }
    }

    fn live(&self, key: &str) -> rusqlite::Result<Option<Live>> {
        self.conn
            .prepare_cached(
                "SELECT k.id, k.value, k.create_revision FROM current c
                 JOIN kv k ON k.id = c.id WHERE c.key = ?1",
            )?
            .query_row(params![key.as_bytes()], |r| {
                let id: i64 = r.get(0)?;
                Ok(Live {
                    id,
                    kv: KeyValue {
                        key: key.to_string(),
                        value: Bytes::copy_from_slice(r.get_ref(1)?.as_blob()?),
                        create_revision: r.get(2)?,
                        mod_revision: revision_of(id),
                    },
                })
            })
            .optional()
    }

    /// The index in `known` of the version of `key` this transaction sees, looked up once.
    fn lookup<'k>(
        &self,
        known: &mut Vec<(&'k str, Option<Live>)>,
        key: &'k str,
    ) -> rusqlite::Result<usize> {
        if let Some(i) = known.iter().position(|(k, _)| *k == key) {
            return Ok(i);
        }
        known.push((key, self.live(key)?));
        Ok(known.len() - 1)
    }

    fn apply(
        &self,
        next: Revision,
        compares: &[Compare],
        ops: &[Op],
        events: &mut Vec<Event>,
    ) -> rusqlite::Result<TxnResponse> {
        if ops.len() >= 1 << SUB_BITS {
            // Not an SQLite error: the savepoint run answers it.
            return Err(rusqlite::Error::ToSqlConversionFailure(
                format!(
                    "transaction of {} operations is larger than the limit of {}",
                    ops.len(),
                    1 << SUB_BITS
                )
                .into(),
            ));
        }
        let mut known = Vec::with_capacity(compares.len().max(ops.len()));
        let mut holds = true;
        let mut compared = Vec::with_capacity(compares.len());
        for compare in compares {
            let i = self.lookup(&mut known, &compare.key)?;
            let live = known[i].1.as_ref();
            holds &= live.map_or(0, |l| l.kv.mod_revision) == compare.mod_revision;
            compared.push(i);
        }
        if !holds {
            return Ok(TxnResponse {
                succeeded: false,
                revision: next - 1,
                prev: compared
                    .into_iter()
                    .map(|i| known[i].1.as_ref().map(|l| l.kv.clone()))
                    .collect(),
            });
        }
        let mut prev = Vec::with_capacity(ops.len());
        let mut changed = false;
        for (index, op) in ops.iter().enumerate() {
            let id = row_id(next, index);
            // Only a later op of this transaction on the same key needs to see this one.
            let more = index + 1 < ops.len();
            match op {
                Op::Put { key, value } => {
                    let i = self.lookup(&mut known, key)?;
                    let before = known[i].1.take();
                    let create_revision = before.as_ref().map_or(next, |l| l.kv.create_revision);
                    self.conn
                        .prepare_cached(
                            "INSERT INTO kv (id, key, value, create_revision, prev_id, deleted)
                             VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                        )?
                        .execute(params![
                            id,
                            key.as_bytes(),
                            value.as_ref(),
                            create_revision,
                            before.as_ref().map(|l| l.id)
                        ])?;
                    let current = if before.is_some() {
                        "UPDATE current SET id = ?2 WHERE key = ?1"
                    } else {
                        "INSERT INTO current (key, id) VALUES (?1, ?2)"
                    };
                    self.conn
                        .prepare_cached(current)?
                        .execute(params![key.as_bytes(), id])?;
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: next,
                    };
                    if more {
                        known[i].1 = Some(Live { id, kv: kv.clone() });
                    }
                    events.push(Event {
                        kind: EventKind::Put,
                        kv,
                        prev: before.as_ref().map(|l| l.kv.clone()),
                    });
                    prev.push(before.map(|l| l.kv));
                    changed = true;
                }
                Op::Delete { key } => {
                    let i = self.lookup(&mut known, key)?;
                    let Some(before) = known[i].1.take() else {
                        prev.push(None);
                        continue;
                    };
                    // The tombstone stores no value: its delete event takes it from `prev_id`.
                    self.conn
                        .prepare_cached(
                            "INSERT INTO kv (id, key, value, create_revision, prev_id, deleted)
                             VALUES (?1, ?2, ?3, ?4, ?5, 1)",
                        )?
                        .execute(params![
                            id,
                            key.as_bytes(),
                            &[] as &[u8],
                            before.kv.create_revision,
                            before.id
                        ])?;
                    self.conn
                        .prepare_cached("DELETE FROM current WHERE key = ?1")?
                        .execute(params![key.as_bytes()])?;
                    events.push(Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: key.clone(),
                            value: before.kv.value.clone(),
                            create_revision: before.kv.create_revision,
                            mod_revision: next,
                        },
                        prev: Some(before.kv.clone()),
                    });
                    prev.push(Some(before.kv));
                    changed = true;
                }
            }
        }
        Ok(TxnResponse {
            succeeded: true,
            revision: if changed { next } else { next - 1 },
            prev,
        })
    }

    /// Remove one window of history rows below the compaction revision: every tombstone, and
    /// every version superseded by a change at or below the revision. The window walks the
    /// changes; each one names the version it superseded (`prev_id`).
    fn compaction_step(&mut self) {
        let Some((revision, cursor)) = self.compaction.as_ref().map(|c| (c.revision, c.cursor))
        else {
            return;
        };
        let below = row_id(revision, 0);
        let upto = row_id(revision + 1, 0);
        let step = || -> rusqlite::Result<Option<(i64, usize)>> {
            self.exec("BEGIN IMMEDIATE")?;
            let window: Option<i64> = self
                .conn
                .prepare_cached(
                    "SELECT max(id) FROM (SELECT id FROM kv WHERE id >= ?1 AND id < ?2
                     ORDER BY id LIMIT ?3)",
                )?
                .query_row(params![cursor, upto, COMPACTION_STEP], |r| r.get(0))?;
            let Some(end) = window else {
                self.exec("COMMIT")?;
                return Ok(None);
            };
            let removed = self
                .conn
                .prepare_cached(
                    "DELETE FROM kv WHERE id IN (
                         SELECT prev_id FROM kv WHERE id >= ?1 AND id <= ?2 AND prev_id < ?3
                         UNION ALL
                         SELECT id FROM kv WHERE id >= ?1 AND id <= ?2 AND id < ?3 AND deleted = 1)",
                )?
                .execute(params![cursor, end, below])?;
            self.exec("COMMIT")?;
            Ok(Some((end + 1, removed)))
        };
        match step() {
            Ok(Some((next, removed))) => {
                let compaction = self.compaction.as_mut().expect("compaction in progress");
                compaction.cursor = next;
                compaction.removed += removed as u64;
            }
            Ok(None) => {
                let done = self.compaction.take().expect("compaction in progress");
                // Give freed pages back to the file system and empty the WAL. The checkpoint
                // must not wait for long reads (writes wait behind it): without waiting it
                // truncates only when no reader is active, else the next compaction does.
                let vacuum = self
                    .conn
                    .execute_batch("PRAGMA incremental_vacuum")
                    .and_then(|()| self.conn.busy_timeout(Duration::ZERO))
                    .and_then(|()| {
                        self.conn
                            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    })
                    .and_then(|()| self.conn.busy_timeout(Duration::from_secs(5)));
                if let Err(e) = vacuum {
                    tracing::warn!(path = self.name, error = %e, "vacuum after compaction");
                }
                tracing::info!(
                    path = self.name,
                    revision = done.revision,
                    removed = done.removed,
                    "compacted sqlite store"
                );
                self.acknowledge(Committed {
                    revision: self.current,
                    events: Vec::new(),
                    replies: done
                        .waiters
                        .into_iter()
                        .map(|w| Reply::Compact(w, Ok(())))
                        .collect(),
                });
            }
            Err(e) => {
                self.rollback();
                let done = self.compaction.take().expect("compaction in progress");
                tracing::warn!(path = self.name, error = %e, "compaction step failed");
                for waiter in done.waiters {
                    let _ = waiter.send(Err(store_error(&e, &self.name, "compacting")));
                }
            }
        }
    }
}

/// Makes commits durable, then acknowledges them and publishes their events.
struct Syncer {
    name: String,
    /// None when fsync is off: commits are acknowledged as they come.
    sync: Option<SyncWal>,
    /// Set after a failed sync: the page cache may have dropped committed data, so nothing
    /// committed from then on is acknowledged.
    failed: Option<String>,
    revisions: Arc<Revisions>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
}

impl Syncer {
    fn run(mut self, commits: mpsc::Receiver<Committed>) {
        while let Ok(first) = commits.recv() {
            // Every commit already handed over finished writing the WAL, so one sync started
            // now makes all of them durable.
            let mut batch = vec![first];
            batch.extend(commits.try_iter());
            if self.failed.is_none()
                && let Some(sync) = self.sync.as_mut()
                && let Err(e) = sync()
            {
                let msg = format!("syncing the write-ahead log of {}: {e}", self.name);
                tracing::error!(path = self.name, error = %e, "sqlite store sync failed; refusing writes");
                // Returns the old value, not an error.
                let _ = self.revisions.durable.send_replace(Err(msg.clone()));
                self.failed = Some(msg);
            }
            match &self.failed {
                Some(msg) => {
                    for reply in batch.into_iter().flat_map(|c| c.replies) {
                        reply.fail(StoreError::Backend(msg.clone()));
                    }
                }
                None => self.publish(batch),
            }
        }
        tracing::debug!(path = self.name, "sqlite store sync stopped");
    }

    fn publish(&self, batch: Vec<Committed>) {
        let revision = batch.iter().map(|c| c.revision).max().unwrap_or(0);
        // The revision first: a watch that subscribes after it replays up to it from the
        // database, one that subscribed before gets the events below.
        if self.revisions.current.fetch_max(revision, Ordering::SeqCst) < revision {
            let _ = self.revisions.durable.send_replace(Ok(revision));
        }
        let mut events = Vec::new();
        let mut replies = Vec::new();
        for committed in batch {
            if events.is_empty() {
                events = committed.events;
            } else {
                events.extend(committed.events);
            }
            replies.extend(committed.replies);
        }
        if !events.is_empty() {
            // No receivers is fine: nobody watches.
            let _ = self.events.send(Arc::new(events));
        }
        for reply in replies {
            reply.send();
        }
    }
}

/// The same error again, for every caller of a failed group.
fn duplicate(err: &StoreError) -> StoreError {
    match err {
        StoreError::Compacted {
            requested,
            compacted,
        } => StoreError::Compacted {
            requested: *requested,
            compacted: *compacted,
        },
        StoreError::FutureRevision { requested, current } => StoreError::FutureRevision {
            requested: *requested,
            current: *current,
        },
        StoreError::NoSpace { path } => StoreError::NoSpace { path: path.clone() },
        StoreError::Backend(msg) => StoreError::Backend(msg.clone()),
        StoreError::Closed => StoreError::Closed,
    }
}

fn reply_error(request: Request, err: StoreError) {
    match request {
        Request::Txn { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Request::Compact { reply, .. } => {
            if let Some(reply) = reply {
                let _ = reply.send(Err(err));
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let resp = self
            .reads
            .read(move |tx, name| range_at(tx, name, &req))
            .await?;
        self.revisions.durable(resp.revision).await?;
        Ok(resp)
    }

    async fn txn(&self, compares: Vec<Compare>, success: Vec<Op>) -> Result<TxnResponse> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Txn {
            compares,
            ops: success,
            reply,
        })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribe before looking at history so no commit falls between the two.
        let live = self.events.subscribe();
        let compacted = self.revisions.compacted.load(Ordering::SeqCst);
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let (out, stream) = tokio::sync::mpsc::channel(16);
        tokio::spawn(watch_loop(
            self.reads.clone(),
            self.revisions.clone(),
            live,
            prefix.to_string(),
            after,
            out,
        ));
        Ok(ReceiverStream::new(stream).boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Compact {
            revision,
            reply: Some(reply),
        })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn revisions(&self) -> Result<(Revision, Revision)> {
        Ok((
            self.revisions.current.load(Ordering::SeqCst),
            self.revisions.compacted.load(Ordering::SeqCst),
        ))
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::StoreExt;

    fn sql(bounds: &Bounds) -> (String, Vec<Value>) {
        let mut params = Vec::new();
        (bounds.sql("key", &mut params), params)
    }

    #[test]
    fn row_ids_sort_by_revision_then_op() {
        assert!(row_id(5, (1 << SUB_BITS) - 1) < row_id(6, 0));
        assert_eq!(revision_of(row_id(42, 7)), 42);
    }

    #[test]
    fn single_key_bounds_hold_only_the_key() {
        let (cond, params) = sql(&Bounds::new("/a", false));
        assert_eq!(cond, "key >= ?1 AND key < ?2");
        assert_eq!(
            params,
            vec![Value::Blob(b"/a".to_vec()), Value::Blob(b"/a\0".to_vec())]
        );
    }

    #[test]
    fn prefix_bounds_and_start_after() {
        let (_, params) = sql(&Bounds::new("/a/", true));
        assert_eq!(params[1], Value::Blob(b"/a0".to_vec()));
        let (cond, params) = sql(&Bounds::new("/a/", true).after(Some("/a/x")));
        assert_eq!(cond, "key > ?1 AND key < ?2");
        assert_eq!(params[0], Value::Blob(b"/a/x".to_vec()));
        // A start before the range changes nothing.
        let (cond, _) = sql(&Bounds::new("/a/", true).after(Some("/0")));
        assert!(cond.starts_with("key >= "));
        // The empty prefix has no end.
        let (cond, _) = sql(&Bounds::new("", true));
        assert_eq!(cond, "key >= ?1");
    }

    /// A store whose WAL syncs wait for the test: each sync reports that it started and then
    /// returns what the test sends.
    fn gated_store(
        dir: &Path,
    ) -> (
        SqliteStore,
        mpsc::Receiver<()>,
        mpsc::Sender<io::Result<()>>,
    ) {
        let (started, syncs) = mpsc::channel();
        let (release, outcomes) = mpsc::channel::<io::Result<()>>();
        let sync: SyncWal = Box::new(move || {
            let _ = started.send(());
            // A timeout, so that a failing test ends instead of waiting here as it drops
            // the store.
            outcomes
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| Err(io::Error::other("test ended")))
        });
        let options = SqliteOptions {
            compaction_interval: Duration::ZERO,
            ..Default::default()
        };
        let store = SqliteStore::open_with(&dir.join("state.db"), options, Some(sync)).unwrap();
        (store, syncs, release)
    }

    fn committed_keys(dir: &Path) -> Vec<String> {
        let conn = Connection::open(dir.join("state.db")).unwrap();
        let mut stmt = conn.prepare("SELECT key FROM kv ORDER BY id").unwrap();
        stmt.query_map([], |r| key_string(r.get(0)?))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    async fn pending<T: Send + 'static>(task: &tokio::task::JoinHandle<T>) -> bool {
        tokio::time::sleep(Duration::from_millis(100)).await;
        !task.is_finished()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_are_acknowledged_and_published_only_after_their_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (store, syncs, release) = gated_store(dir.path());
        let store = Arc::new(store);
        let mut watch = store.watch("/p/", 0).await.unwrap();

        let first = tokio::spawn({
            let store = store.clone();
            async move { store.create("/p/a", Bytes::from_static(b"1")).await }
        });
        syncs.recv_timeout(Duration::from_secs(10)).unwrap();
        // Committed to the WAL, and the sync of it under way, but not yet durable.
        assert_eq!(committed_keys(dir.path()), ["/p/a"]);
        assert!(
            pending(&first).await,
            "acknowledged before its sync finished"
        );
        assert_eq!(store.revisions().await.unwrap().0, 0);
        let read = tokio::spawn({
            let store = store.clone();
            async move { store.get("/p/a").await }
        });
        assert!(
            pending(&read).await,
            "a read answered with a write not yet durable"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(100), watch.next())
                .await
                .is_err(),
            "published before durable"
        );

        // The writer goes on with the next group while the first one syncs.
        let second = tokio::spawn({
            let store = store.clone();
            async move { store.create("/p/b", Bytes::from_static(b"2")).await }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while committed_keys(dir.path()).len() < 2 {
            assert!(Instant::now() < deadline, "the writer waited for the sync");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(pending(&second).await);

        // That sync started before the second commit, so it acknowledges only the first.
        release.send(Ok(())).unwrap();
        assert_eq!(first.await.unwrap().unwrap().revision, 1);
        let got = read.await.unwrap().unwrap().unwrap();
        assert_eq!((got.key.as_str(), got.mod_revision), ("/p/a", 1));
        let events = watch.next().await.unwrap().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kv.key, "/p/a");
        assert!(
            pending(&second).await,
            "acknowledged without a sync after it"
        );
        assert_eq!(store.revisions().await.unwrap().0, 1);

        syncs.recv_timeout(Duration::from_secs(10)).unwrap();
        release.send(Ok(())).unwrap();
        assert_eq!(second.await.unwrap().unwrap().revision, 2);
        let events = watch.next().await.unwrap().unwrap();
        assert_eq!(events[0].kv.mod_revision, 2);
        assert_eq!(store.revisions().await.unwrap().0, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_fails_its_writes_and_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let (store, syncs, release) = gated_store(dir.path());
        let store = Arc::new(store);
        let write = tokio::spawn({
            let store = store.clone();
            async move { store.create("/f/a", Bytes::from_static(b"1")).await }
        });
        syncs.recv_timeout(Duration::from_secs(10)).unwrap();
        let read = tokio::spawn({
            let store = store.clone();
            async move { store.get("/f/a").await }
        });
        assert!(pending(&read).await);
        release.send(Err(io::Error::other("injected"))).unwrap();
        let failed = write.await.unwrap();
        assert!(
            matches!(&failed, Err(StoreError::Backend(msg)) if msg.contains("injected")),
            "{failed:?}"
        );
        let read = read.await.unwrap();
        assert!(matches!(read, Err(StoreError::Backend(_))), "{read:?}");
        let again = store.create("/f/b", Bytes::from_static(b"2")).await;
        assert!(matches!(again, Err(StoreError::Backend(_))), "{again:?}");
        assert_eq!(
            committed_keys(dir.path()),
            ["/f/a"],
            "no write after a failed sync"
        );
        assert_eq!(store.revisions().await.unwrap().0, 0);
    }

    /// What the store should hold after each revision.
    type Model = Vec<BTreeMap<String, KeyValue>>;

    /// Random transactions on a few keys, with the expected content after each revision.
    async fn random_history(store: &SqliteStore, txns: usize) -> Model {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut model = vec![BTreeMap::new()];
        for t in 0..txns {
            let ops: Vec<Op> = (0..1 + next(3))
                .map(|o| {
                    let key = match next(8) {
                        7 => "/n/outside".to_string(),
                        k => format!("/m/k{k}"),
                    };
                    if next(3) == 0 {
                        Op::Delete { key }
                    } else {
                        Op::Put {
                            key,
                            value: Bytes::from(format!("v{t}.{o}")),
                        }
                    }
                })
                .collect();
            let resp = store.txn(vec![], ops.clone()).await.unwrap();
            let mut state = model.last().unwrap().clone();
            let revision = model.len() as Revision;
            for op in ops {
                match op {
                    Op::Put { key, value } => {
                        let create_revision = state
                            .get(&key)
                            .map_or(revision, |kv: &KeyValue| kv.create_revision);
                        state.insert(
                            key.clone(),
                            KeyValue {
                                key,
                                value,
                                create_revision,
                                mod_revision: revision,
                            },
                        );
                    }
                    Op::Delete { key } => {
                        state.remove(&key);
                    }
                }
            }
            if resp.revision == revision {
                model.push(state);
            } else {
                assert_eq!(
                    resp.revision,
                    revision - 1,
                    "only a no-op takes no revision"
                );
                assert_eq!(&state, model.last().unwrap());
            }
        }
        model
    }

    async fn check_range(store: &SqliteStore, model: &Model, revision: Revision) {
        let expected: Vec<KeyValue> = model[revision as usize]
            .range("/m/".to_string().."/m0".to_string())
            .map(|(_, kv)| kv.clone())
            .collect();
        let all = store
            .range(RangeRequest {
                revision,
                ..RangeRequest::prefix("/m/")
            })
            .await
            .unwrap();
        assert_eq!(all.kvs, expected, "at revision {revision}");
        assert_eq!(all.count, expected.len() as i64);
        // Pages of two, as a paginated list reads them.
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .range(RangeRequest {
                    revision,
                    limit: 2,
                    start_after: after.clone(),
                    ..RangeRequest::prefix("/m/")
                })
                .await
                .unwrap();
            assert_eq!(page.count, expected.len() as i64);
            after = page.kvs.last().map(|kv| kv.key.clone());
            paged.extend(page.kvs);
            if !page.more {
                break;
            }
        }
        assert_eq!(paged, expected, "pages at revision {revision}");
        let single = store
            .range(RangeRequest {
                revision,
                ..RangeRequest::key("/m/k3")
            })
            .await
            .unwrap();
        assert_eq!(
            single.kvs,
            model[revision as usize]
                .get("/m/k3")
                .cloned()
                .into_iter()
                .collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn reads_at_every_revision_match_a_model_before_and_after_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            fsync: false,
            compaction_interval: Duration::ZERO,
            ..Default::default()
        };
        let store = SqliteStore::open(&dir.path().join("state.db"), options).unwrap();
        let model = random_history(&store, 300).await;
        let current = model.len() as Revision - 1;
        assert_eq!(store.revisions().await.unwrap().0, current);
        for revision in 1..=current {
            check_range(&store, &model, revision).await;
        }
        let compacted = current / 2;
        store.compact(compacted).await.unwrap();
        for revision in compacted..=current {
            check_range(&store, &model, revision).await;
        }
        let old = store
            .range(RangeRequest {
                revision: compacted - 1,
                ..RangeRequest::prefix("/m/")
            })
            .await;
        assert!(matches!(old, Err(StoreError::Compacted { .. })), "{old:?}");
        // Below the compacted revision only versions still live then are left (one per key).
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        let old_rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM kv WHERE id < ?1",
                [row_id(compacted, 0)],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            old_rows <= 8,
            "{old_rows} rows of compacted history are left"
        );

        // A watch from the compacted revision replays complete events, deletes with the
        // value they removed.
        let mut watch = store.watch("/m/", compacted).await.unwrap();
        let mut events = Vec::new();
        while events
            .last()
            .is_none_or(|e: &Event| e.kv.mod_revision < current)
        {
            events.extend(watch.next().await.unwrap().unwrap());
        }
        assert_eq!(events.first().unwrap().kv.mod_revision, compacted + 1);
        let changes = |e: &Event| {
            events
                .iter()
                .filter(|o| (&o.kv.key, o.kv.mod_revision) == (&e.kv.key, e.kv.mod_revision))
                .count()
        };
        // Keys changed once in their transaction (the model has no state between ops).
        for event in events.iter().filter(|e| changes(e) == 1) {
            let revision = event.kv.mod_revision as usize;
            let before = model[revision - 1].get(&event.kv.key);
            assert_eq!(event.prev.as_ref(), before, "prev of {event:?}");
            match event.kind {
                EventKind::Put => {
                    assert_eq!(Some(&event.kv), model[revision].get(&event.kv.key));
                }
                EventKind::Delete => {
                    assert_eq!(event.kv.value, before.unwrap().value);
                    assert!(!model[revision].contains_key(&event.kv.key));
                }
            }
        }

        // Everything survives a reopen, with the revision taken from the history.
        drop(watch);
        drop(store);
        let store =
            SqliteStore::open(&dir.path().join("state.db"), SqliteOptions::default()).unwrap();
        assert_eq!(store.revisions().await.unwrap(), (current, compacted));
        check_range(&store, &model, current).await;
    }
}

/// Write throughput like `rkube bench store` (closed loop, 256 B values, fsync), for profiling:
/// `cargo test --release -p store --lib -- --ignored --nocapture write_throughput`.
#[cfg(test)]
mod throughput {
    use super::*;
    use crate::StoreExt;

    #[test]
    #[ignore = "a measurement, not a test"]
    fn write_throughput() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let secs: f64 = std::env::var("SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3.0);
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let options = SqliteOptions {
                fsync: std::env::var("FSYNC").map_or(true, |v| v != "0"),
                ..Default::default()
            };
            let store = SqliteStore::open(&dir.path().join("state.db"), options).unwrap();
            let value = Bytes::from(vec![b'v'; 256]);
            // Bytes written and CPU time (ticks of 10 ms) of this process.
            let usage = || {
                let io = std::fs::read_to_string("/proc/self/io").unwrap();
                let wchar: f64 = io.lines().find_map(|l| l.strip_prefix("wchar: ")).unwrap().parse().unwrap();
                let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
                let f: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
                let cpu: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
                (wchar, cpu * 10_000.0)
            };
            for writers in [1usize, 16] {
                let (w0, c0) = usage();
                let start = Instant::now();
                let budget = Duration::from_secs_f64(secs);
                let runs = (0..writers).map(|w| {
                    let (store, value) = (&store, value.clone());
                    async move {
                        let mut n = 0;
                        while start.elapsed() < budget {
                            let key = format!("/bench/writes-{writers}/{w}/{n}");
                            assert!(store.create(&key, value.clone()).await.unwrap().succeeded);
                            n += 1;
                        }
                        n
                    }
                });
                let total: usize = futures::future::join_all(runs).await.into_iter().sum();
                let rate = total as f64 / start.elapsed().as_secs_f64();
                let (w1, c1) = usage();
                let n = total as f64;
                println!(
                    "{writers} writer(s): {rate:.0} writes/s, {:.0} B written/write, {:.1} us cpu/write",
                    (w1 - w0) / n,
                    (c1 - c0) / n
                );
            }
        });
    }
}
