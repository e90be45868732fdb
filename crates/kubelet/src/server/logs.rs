//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's log in the CRI format
//! (`<RFC3339Nano> stdout|stderr F|P <message>`), turned back into what the container wrote,
//! with upstream's options: follow, previous, tailLines, sinceSeconds/sinceTime, timestamps,
//! limitBytes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use futures::future::BoxFuture;
use http::StatusCode;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// How often a follower looks for new lines once it reached the end of the file.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How often a follower asks whether the container still runs.
const RUNNING_CHECK: Duration = Duration::from_secs(1);

/// The query of a log request, as `PodLogOptions` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<usize>,
    /// Only lines at or after this time (from sinceSeconds or sinceTime, the later one).
    pub since: Option<DateTime<Utc>>,
    pub timestamps: bool,
    pub limit_bytes: Option<u64>,
    /// Only this stream (`stream=Stdout|Stderr`); both when `None` (`All`).
    pub stream: Option<LogStream>,
    /// Not a query option: skip the current file up to this offset (and the rotated one),
    /// for attach, which shows only what is written from the moment it starts.
    pub start_at: Option<u64>,
}

/// A query parameter's boolean, as Go's `strconv.ParseBool` (an empty value means true).
pub(crate) fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid value {value:?} for {name}: not a boolean")),
    }
}

impl LogOptions {
    pub fn from_query(
        query: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<LogOptions, String> {
        let mut opts = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (name, value) in query {
            match name.as_str() {
                "follow" => opts.follow = parse_bool(name, value)?,
                "previous" => opts.previous = parse_bool(name, value)?,
                "timestamps" => opts.timestamps = parse_bool(name, value)?,
                "tailLines" => {
                    let n: i64 = value
                        .parse()
                        .map_err(|_| format!("invalid value {value:?} for tailLines"))?;
                    // Negative means all lines, as the kubelet's CRI log reader takes it.
                    opts.tail_lines = usize::try_from(n).ok();
                }
                "limitBytes" => {
                    let n: i64 = value
                        .parse()
                        .map_err(|_| format!("invalid value {value:?} for limitBytes"))?;
                    if n < 1 {
                        return Err("limitBytes: must be greater than 0".into());
                    }
                    opts.limit_bytes = Some(n as u64);
                }
                "sinceSeconds" => {
                    let n: i64 = value
                        .parse()
                        .map_err(|_| format!("invalid value {value:?} for sinceSeconds"))?;
                    if n < 1 {
                        return Err("sinceSeconds: must be greater than 0".into());
                    }
                    since_seconds = Some(now - chrono::Duration::seconds(n));
                }
                "stream" => {
                    opts.stream = match value.as_str() {
                        "Stdout" => Some(LogStream::Stdout),
                        "Stderr" => Some(LogStream::Stderr),
                        "All" | "" => None,
                        _ => return Err(format!("invalid value {value:?} for stream")),
                    }
                }
                "sinceTime" => {
                    let t = DateTime::parse_from_rfc3339(value).map_err(|_| {
                        format!("invalid value {value:?} for sinceTime: not RFC 3339")
                    })?;
                    since_time = Some(t.with_timezone(&Utc));
                }
                _ => {}
            }
        }
        opts.since = match (since_seconds, since_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Ok(opts)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub time: DateTime<FixedOffset>,
    pub stream: LogStream,
    /// `P`: the container's line continues in the next record.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parse one record (without its trailing newline); `None` if it is not in the CRI format.
pub fn parse_line(line: &[u8]) -> Option<LogLine<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let time = DateTime::parse_from_rfc3339(time).ok()?;
    let stream = match parts.next()? {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return None,
    };
    // Tags are `:`-separated; only the first (F or P) means anything today.
    let tags = parts.next()?;
    let partial = tags.split(|b| *b == b':').next() == Some(b"P");
    let content = parts.next().unwrap_or(b"");
    Some(LogLine {
        time,
        stream,
        partial,
        content,
    })
}

/// Turns records into output: filters by time, adds timestamps, applies limitBytes.
pub struct LogWriter {
    stream: Option<LogStream>,
    since: Option<DateTime<Utc>>,
    timestamps: bool,
    remaining: Option<u64>,
}

impl LogWriter {
    pub fn new(opts: &LogOptions) -> LogWriter {
        LogWriter {
            stream: opts.stream,
            since: opts.since,
            timestamps: opts.timestamps,
            remaining: opts.limit_bytes,
        }
    }

    /// Append the output of one record to `out`; false once limitBytes is reached.
    pub fn write(&mut self, line: &LogLine<'_>, out: &mut Vec<u8>) -> bool {
        if self.remaining == Some(0) {
            return false;
        }
        if self.since.is_some_and(|since| line.time < since)
            || self.stream.is_some_and(|stream| stream != line.stream)
        {
            return true;
        }
        let start = out.len();
        if self.timestamps {
            out.extend_from_slice(
                line.time
                    .to_rfc3339_opts(SecondsFormat::Nanos, true)
                    .as_bytes(),
            );
            out.push(b' ');
        }
        out.extend_from_slice(line.content);
        if !line.partial {
            out.push(b'\n');
        }
        if let Some(remaining) = &mut self.remaining {
            let written = (out.len() - start) as u64;
            if written >= *remaining {
                out.truncate(start + *remaining as usize);
                *remaining = 0;
                return false;
            }
            *remaining -= written;
        }
        true
    }
}

/// Which files hold the log asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSource {
    pub pod_uid: String,
    /// `<pod-log-dir>/<container>`
    pub dir: PathBuf,
    pub attempt: u32,
    /// `<attempt>.log.1`, if the log was rotated.
    pub rotated: Option<PathBuf>,
    /// `<attempt>.log`
    pub current: PathBuf,
}

/// Why there is no log to serve: an HTTP status and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LogError {
    pub status: StatusCode,
    pub message: String,
}

impl LogError {
    fn new(status: StatusCode, message: String) -> LogError {
        LogError { status, message }
    }
}

/// The log directory of the newest pod `<namespace>/<name>` (by the directory's mtime when a
/// pod of that name was recreated), with its UID.
pub fn pod_log_dir(log_root: &Path, namespace: &str, pod: &str) -> Option<(String, PathBuf)> {
    let prefix = format!("{namespace}_{pod}_");
    let entries = std::fs::read_dir(log_root).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let uid = name.strip_prefix(&prefix)?;
            if uid.is_empty() || uid.contains('_') {
                return None;
            }
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((modified, uid.to_string(), e.path()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, uid, path)| (uid, path))
}

/// The attempts with a log file in a container's log directory, ascending.
pub fn attempts(dir: &Path) -> Vec<u32> {
    let mut attempts: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
        .collect();
    attempts.sort_unstable();
    attempts
}

/// Find the files of a container's current (or, with `previous`, last terminated) log.
pub fn locate(
    log_root: &Path,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<LogSource, LogError> {
    let Some((pod_uid, pod_dir)) = pod_log_dir(log_root, namespace, pod) else {
        return Err(LogError::new(
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" does not exist on this node"),
        ));
    };
    let dir = pod_dir.join(container);
    let attempts = attempts(&dir);
    let attempt = if previous {
        match attempts.len() {
            0 | 1 => {
                return Err(LogError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    ),
                ));
            }
            n => attempts[n - 2],
        }
    } else {
        match attempts.last() {
            Some(a) => *a,
            None => {
                return Err(LogError::new(
                    StatusCode::BAD_REQUEST,
                    format!("container \"{container}\" in pod \"{pod}\" is waiting to start"),
                ));
            }
        }
    };
    let current = dir.join(format!("{attempt}.log"));
    let rotated = dir.join(format!("{attempt}.log.1"));
    Ok(LogSource {
        pod_uid,
        attempt,
        rotated: rotated.exists().then_some(rotated),
        current,
        dir,
    })
}

/// Whether to keep following: asked about once a second at the end of the file.
pub type StillRunning = Box<dyn FnMut() -> BoxFuture<'static, bool> + Send>;

/// Emits formatted output for complete records, in batches.
struct Emitter {
    writer: LogWriter,
    out: Vec<u8>,
    tx: mpsc::Sender<Bytes>,
    done: bool,
}

impl Emitter {
    /// Format one record; returns false once no more output is wanted.
    fn record(&mut self, record: &[u8]) -> bool {
        if let Some(line) = parse_line(record)
            && !self.writer.write(&line, &mut self.out)
        {
            self.done = true;
        }
        !self.done
    }

    /// Send what is buffered; false if the client went away.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::take(&mut self.out));
        self.tx.send(chunk).await.is_ok()
    }
}

/// Write the log to `tx` as `opts` says; with follow, keep writing new records until
/// `still_running` says no (and the file is drained), a newer attempt starts, or the client
/// goes away (`tx` closed).
pub async fn stream(
    source: LogSource,
    opts: LogOptions,
    mut still_running: StillRunning,
    tx: mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let mut emitter = Emitter {
        writer: LogWriter::new(&opts),
        out: Vec::with_capacity(64 * 1024),
        tx,
        done: false,
    };
    let mut data = match (&source.rotated, opts.start_at) {
        (Some(rotated), None) => tokio::fs::read(rotated).await.unwrap_or_default(),
        _ => Vec::new(),
    };
    if !data.is_empty() && !data.ends_with(b"\n") {
        data.push(b'\n');
    }
    let mut file = tokio::fs::File::open(&source.current).await?;
    if let Some(offset) = opts.start_at {
        use tokio::io::AsyncSeekExt as _;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
    }
    let mut current = Vec::new();
    file.read_to_end(&mut current).await?;
    // A follower keeps an unfinished last record until its newline arrives.
    let mut pending = Vec::new();
    if opts.follow {
        let complete = current
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        pending = current.split_off(complete);
    }
    data.extend_from_slice(&current);
    drop(current);
    let mut records: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    if records.last().is_some_and(|r| r.is_empty()) {
        records.pop();
    }
    let start = opts.tail_lines.map_or(0, |n| tail_start(&records, n));
    for record in &records[start..] {
        if !emitter.record(record) {
            break;
        }
    }
    drop(records);
    drop(data);
    if !emitter.flush().await || emitter.done || !opts.follow {
        return Ok(());
    }

    let mut buf = vec![0u8; 64 * 1024];
    let mut last_check = tokio::time::Instant::now();
    let mut stopping = false;
    loop {
        let n = file.read(&mut buf).await?;
        if n > 0 {
            pending.extend_from_slice(&buf[..n]);
            let complete = pending
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            let rest = pending.split_off(complete);
            for record in pending.split(|b| *b == b'\n') {
                if !record.is_empty() && !emitter.record(record) {
                    break;
                }
            }
            pending = rest;
            if !emitter.flush().await || emitter.done {
                return Ok(());
            }
            continue;
        }
        // At the end of the file: was it rotated (renamed away, a new one created)?
        if let Some(reopened) = reopen_if_rotated(&source.current, &file).await {
            file = reopened;
            continue;
        }
        if stopping {
            return Ok(());
        }
        if last_check.elapsed() >= RUNNING_CHECK {
            last_check = tokio::time::Instant::now();
            let restarted = attempts(&source.dir)
                .last()
                .is_some_and(|a| *a > source.attempt);
            if restarted || !still_running().await {
                // One more pass picks up what was written before the container stopped.
                stopping = true;
                continue;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = emitter.tx.closed() => return Ok(()),
        }
    }
}

/// Where the last `n` lines start. A line split into partial records counts once (upstream
/// counts records, which can start the output in the middle of a line).
fn tail_start(records: &[&[u8]], n: usize) -> usize {
    let mut lines = 0;
    for (i, record) in records.iter().enumerate().rev() {
        if parse_line(record).is_some_and(|l| l.partial) {
            continue;
        }
        lines += 1;
        if lines > n {
            return i + 1;
        }
    }
    0
}

/// The file now at `path` if it is not the one we have open (the log was rotated).
async fn reopen_if_rotated(path: &Path, open: &tokio::fs::File) -> Option<tokio::fs::File> {
    use std::os::unix::fs::MetadataExt as _;
    let open_ino = open.metadata().await.ok()?.ino();
    let path_ino = tokio::fs::metadata(path).await.ok()?.ino();
    if open_ino == path_ino {
        return None;
    }
    tokio::fs::File::open(path).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn options_from_query() {
        let now = DateTime::parse_from_rfc3339("2024-01-01T00:01:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let opts = LogOptions::from_query(
            &query(&[
                ("follow", "true"),
                ("tailLines", "3"),
                ("timestamps", "1"),
                ("limitBytes", "100"),
                ("sinceSeconds", "30"),
                ("sinceTime", "2024-01-01T00:00:10Z"),
            ]),
            now,
        )
        .unwrap();
        assert!(opts.follow && opts.timestamps && !opts.previous);
        assert_eq!(opts.tail_lines, Some(3));
        assert_eq!(opts.limit_bytes, Some(100));
        // The later of the two bounds wins.
        assert_eq!(
            opts.since.unwrap().to_rfc3339(),
            "2024-01-01T00:00:30+00:00"
        );
        assert!(LogOptions::from_query(&query(&[("limitBytes", "0")]), now).is_err());
        assert!(LogOptions::from_query(&query(&[("follow", "yes")]), now).is_err());
        assert!(LogOptions::from_query(&query(&[("sinceTime", "yesterday")]), now).is_err());
        assert_eq!(
            LogOptions::from_query(&query(&[("tailLines", "-1")]), now)
                .unwrap()
                .tail_lines,
            None
        );
    }

    #[test]
    fn parses_cri_records() {
        let line = parse_line(b"2024-01-01T00:00:00.123456789Z stderr P half a line").unwrap();
        assert_eq!(line.stream, LogStream::Stderr);
        assert!(line.partial);
        assert_eq!(line.content, b"half a line");
        assert_eq!(line.time.timestamp_subsec_nanos(), 123_456_789);
        let empty = parse_line(b"2024-01-01T00:00:00Z stdout F").unwrap();
        assert_eq!(empty.content, b"");
        assert!(!empty.partial);
        let tagged = parse_line(b"2024-01-01T00:00:00Z stdout F:x  two spaces").unwrap();
        assert_eq!(tagged.content, b" two spaces");
        assert!(parse_line(b"not a log line").is_none());
        assert!(parse_line(b"2024-01-01T00:00:00Z stdin F x").is_none());
    }

    fn write_all(opts: &LogOptions, records: &[&[u8]]) -> String {
        let mut writer = LogWriter::new(opts);
        let mut out = Vec::new();
        for record in records {
            if !writer.write(&parse_line(record).unwrap(), &mut out) {
                break;
            }
        }
        String::from_utf8(out).unwrap()
    }

    const RECORDS: &[&[u8]] = &[
        b"2024-01-01T00:00:01.5Z stdout F one",
        b"2024-01-01T00:00:02Z stderr P tw",
        b"2024-01-01T00:00:02.000000001Z stderr F o",
        b"2024-01-01T00:00:03Z stdout F three",
    ];

    #[test]
    fn partial_records_join_and_timestamps_are_fixed_width() {
        assert_eq!(
            write_all(&LogOptions::default(), RECORDS),
            "one\ntwo\nthree\n"
        );
        let opts = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            write_all(&opts, &RECORDS[..1]),
            "2024-01-01T00:00:01.500000000Z one\n"
        );
    }

    #[test]
    fn since_and_limit_bytes() {
        let opts = LogOptions {
            since: Some(
                DateTime::parse_from_rfc3339("2024-01-01T00:00:02Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            ..Default::default()
        };
        assert_eq!(write_all(&opts, RECORDS), "two\nthree\n");
        let opts = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(write_all(&opts, RECORDS), "one\ntw");
        let opts = LogOptions {
            stream: Some(LogStream::Stderr),
            ..Default::default()
        };
        assert_eq!(write_all(&opts, RECORDS), "two\n");
    }

    fn log_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, LogSource) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ns_pod_uid-1").join("c");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        let source = locate(root.path(), "ns", "pod", "c", false).unwrap();
        (root, source)
    }

    async fn collect(source: LogSource, opts: LogOptions) -> String {
        let (tx, mut rx) = mpsc::channel(16);
        let task = tokio::spawn(stream(
            source,
            opts,
            Box::new(|| Box::pin(async { false })),
            tx,
        ));
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk);
        }
        task.await.unwrap().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tail_counts_lines_not_records() {
        let records: Vec<&[u8]> = RECORDS.to_vec();
        assert_eq!(tail_start(&records, 0), 4);
        assert_eq!(tail_start(&records, 1), 3);
        assert_eq!(
            tail_start(&records, 2),
            1,
            "the partial record comes with its line"
        );
        assert_eq!(tail_start(&records, 3), 0);
        assert_eq!(tail_start(&records, 10), 0);
    }

    #[tokio::test]
    async fn rotated_file_comes_first_and_tail_spans_both() {
        let (_root, source) = log_dir(&[
            (
                "0.log.1",
                "2024-01-01T00:00:01Z stdout F a\n2024-01-01T00:00:02Z stdout F b\n",
            ),
            (
                "0.log",
                "2024-01-01T00:00:03Z stdout F c\n2024-01-01T00:00:04Z stdout F d",
            ),
        ]);
        assert!(source.rotated.is_some());
        assert_eq!(
            collect(source.clone(), LogOptions::default()).await,
            "a\nb\nc\nd\n"
        );
        let tail = LogOptions {
            tail_lines: Some(3),
            ..Default::default()
        };
        assert_eq!(collect(source.clone(), tail).await, "b\nc\nd\n");
        let none = LogOptions {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert_eq!(collect(source, none).await, "");
    }

    #[test]
    fn locate_picks_attempts_and_reports_missing_ones() {
        let root = tempfile::tempdir().unwrap();
        let err = locate(root.path(), "ns", "pod", "c", false).unwrap_err();
        assert_eq!(err.status, StatusCode::NOT_FOUND);
        let dir = root.path().join("ns_pod_u1").join("c");
        std::fs::create_dir_all(&dir).unwrap();
        let err = locate(root.path(), "ns", "pod", "c", false).unwrap_err();
        assert!(err.message.contains("waiting to start"), "{err}");
        for attempt in [0, 2, 10] {
            std::fs::write(dir.join(format!("{attempt}.log")), "").unwrap();
        }
        std::fs::write(dir.join("10.log.1"), "").unwrap();
        let current = locate(root.path(), "ns", "pod", "c", false).unwrap();
        assert_eq!(current.attempt, 10);
        assert_eq!(current.pod_uid, "u1");
        assert!(current.rotated.is_some());
        let previous = locate(root.path(), "ns", "pod", "c", true).unwrap();
        assert_eq!(previous.attempt, 2);
        assert!(previous.rotated.is_none());
        // Another pod whose name shares the prefix is not ours.
        let other = root.path().join("ns_pod_x_u2").join("c");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("0.log"), "").unwrap();
        assert_eq!(
            locate(root.path(), "ns", "pod", "c", false)
                .unwrap()
                .pod_uid,
            "u1"
        );
        let single = root.path().join("ns_solo_u3").join("c");
        std::fs::create_dir_all(&single).unwrap();
        std::fs::write(single.join("0.log"), "").unwrap();
        let err = locate(root.path(), "ns", "solo", "c", true).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(
            err.message.contains("previous terminated container"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn follow_streams_new_records_across_rotation_until_the_container_stops() {
        let (_root, source) = log_dir(&[("0.log", "2024-01-01T00:00:01Z stdout F old\n")]);
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let check = running.clone();
        let (tx, mut rx) = mpsc::channel(16);
        let opts = LogOptions {
            follow: true,
            tail_lines: Some(1),
            ..Default::default()
        };
        let path = source.current.clone();
        let task = tokio::spawn(stream(
            source,
            opts,
            Box::new(move || {
                let running = check.load(std::sync::atomic::Ordering::SeqCst);
                Box::pin(async move { running })
            }),
            tx,
        ));
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"old\n"));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        // Half a record first: nothing comes out until its newline.
        f.write_all(b"2024-01-01T00:00:02Z stdout P ne").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err());
        f.write_all(b"w\n2024-01-01T00:00:02Z stdout F !\n")
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"new!\n"));
        // Rotation: the shim renames the file and starts a new one.
        std::fs::rename(&path, path.with_extension("log.1")).unwrap();
        std::fs::write(&path, "2024-01-01T00:00:03Z stdout F rotated\n").unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"rotated\n"));
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"2024-01-01T00:00:04Z stdout F last words\n")
            .unwrap();
        let mut rest = Vec::new();
        while let Some(chunk) = rx.recv().await {
            rest.extend_from_slice(&chunk);
        }
        assert_eq!(rest, b"last words\n");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn start_at_skips_what_was_written_before() {
        let first = "2024-01-01T00:00:01Z stdout F before\n";
        let (_root, source) = log_dir(&[
            ("0.log.1", "2024-01-01T00:00:00Z stdout F rotated\n"),
            (
                "0.log",
                &format!("{first}2024-01-01T00:00:02Z stdout F after\n"),
            ),
        ]);
        let opts = LogOptions {
            start_at: Some(first.len() as u64),
            ..Default::default()
        };
        assert_eq!(collect(source, opts).await, "after\n");
    }

    #[tokio::test]
    async fn follow_ends_when_a_newer_attempt_starts_or_the_client_goes() {
        let (root, source) = log_dir(&[("0.log", "2024-01-01T00:00:01Z stdout F a\n")]);
        let (tx, mut rx) = mpsc::channel(16);
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let task = tokio::spawn(stream(
            source.clone(),
            opts.clone(),
            Box::new(|| Box::pin(async { true })),
            tx,
        ));
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"a\n"));
        std::fs::write(source.dir.join("1.log"), "").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .is_none()
        );
        task.await.unwrap().unwrap();

        std::fs::remove_file(source.dir.join("1.log")).unwrap();
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(stream(
            source,
            opts,
            Box::new(|| Box::pin(async { true })),
            tx,
        ));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        drop(root);
    }
}
