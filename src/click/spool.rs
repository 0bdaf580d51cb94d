//! The durable click spool: where a click goes when Redis cannot take it in
//! time, so that a `302` is only ever sent for a durable click.
//!
//! # Invariants
//! - **Durable before acknowledged.** [`Spool::append`] returns only after the
//!   record's bytes are written *and* `fdatasync`ed. Appends are group-committed:
//!   one writer thread takes every append waiting at that moment, writes them
//!   with one `write`, and syncs once, so one disk sync serves many clicks.
//! - **Bounded.** The spool never grows past `max_bytes`; an append that would is
//!   refused with [`SpoolError::Full`] (the caller still redirects and counts the
//!   click as dropped, loudly).
//! - **Replay in order, idempotent.** Records live in numbered segment files
//!   `clicks-{seq:020}.spool`. The replayer asks the writer to seal the current
//!   segment, then replays sealed segments oldest first into the click stream
//!   and deletes each only after Redis acknowledged all of it. Replaying a
//!   segment twice (a crash between replay and delete) appends its clicks to the
//!   stream twice; the aggregator counts a click token once, so counts are exact.
//! - **Survives restarts and crashes.** Segments left by a previous process
//!   (clean stop or `kill -9`) are found at start and replayed.
//! - **Corruption is skipped, never replayed.** Each record is framed and
//!   checksummed; a torn tail (a crash mid-write) or a record whose checksum does
//!   not match is skipped and counted, and reading resumes at the next record
//!   marker.
//!
//! # Record layout
//!
//! ```text
//! magic "LLS1" (4 bytes) | len: u32 LE | crc32: u32 LE (CRC-32/ISO-HDLC of payload) | payload (len bytes)
//! payload = click token (36 bytes, canonical UUID text) "\t" packed click record (ClickRecord::to_packed)
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

/// Record marker. NEVER CHANGE for v1 spools on disk.
pub const MAGIC: &[u8; 4] = b"LLS1";
/// Largest payload accepted, bytes (a click record is about 150).
pub const MAX_PAYLOAD: usize = 4096;
const HEADER: usize = 12;
/// Most appends written and synced together.
const MAX_GROUP: usize = 4096;

/// Why an append failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    /// The spool is at its size cap.
    #[error("spool full")]
    Full,
    /// Writing or syncing failed (disk full, I/O error), or the writer is gone.
    #[error("spool I/O error")]
    Io,
}

impl SpoolError {
    /// Metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            SpoolError::Full => "spool_full",
            SpoolError::Io => "spool_io",
        }
    }
}

/// Counters the spool keeps (exported by the metrics module).
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Records on disk not yet replayed.
    pub pending_records: AtomicU64,
    /// Bytes on disk.
    pub bytes: AtomicU64,
    /// Records appended since start.
    pub appended: AtomicU64,
    /// `fdatasync` calls since start.
    pub fsyncs: AtomicU64,
    /// Records replayed into Redis since start.
    pub replayed: AtomicU64,
    /// Torn records skipped since start.
    pub torn: AtomicU64,
    /// Records with a bad checksum skipped since start.
    pub corrupt: AtomicU64,
}

/// Who waits for an append's outcome.
type Ack = oneshot::Sender<Result<(), SpoolError>>;

enum Cmd {
    Append(Vec<u8>, Ack),
    /// Close the current segment; reply with the sealed segments, oldest first.
    Seal(oneshot::Sender<Vec<PathBuf>>),
}

/// Handle to the spool; cheap to clone.
#[derive(Clone, Debug)]
pub struct Spool {
    tx: std::sync::mpsc::Sender<Cmd>,
    /// Shared counters.
    pub stats: Arc<SpoolStats>,
    dir: PathBuf,
}

impl Spool {
    /// Opens (creating) the spool directory, counts what earlier processes left,
    /// and starts the writer thread. New appends go to a fresh segment.
    ///
    /// Errors: the directory cannot be created or read.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let stats = Arc::new(SpoolStats::default());
        let existing = segments(dir)?;
        let mut next_seq = 0;
        for path in &existing {
            let data = fs::read(path)?;
            stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            let (records, _) = decode(&data);
            stats.pending_records.fetch_add(records.len() as u64, Ordering::Relaxed);
            next_seq = next_seq.max(seq_of(path).map_or(0, |s| s + 1));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = Writer { dir: dir.to_owned(), seq: next_seq, file: None, max_bytes, stats: stats.clone() };
        std::thread::Builder::new().name("click-spool".into()).spawn(move || writer.run(rx))?;
        Ok(Spool { tx, stats, dir: dir.to_owned() })
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one click and waits until it is on disk (fsynced).
    ///
    /// Errors: [`SpoolError::Full`] at the size cap, [`SpoolError::Io`] otherwise.
    pub async fn append(&self, token: &str, record: &str) -> Result<(), SpoolError> {
        let mut payload = Vec::with_capacity(token.len() + 1 + record.len());
        payload.extend_from_slice(token.as_bytes());
        payload.push(b'\t');
        payload.extend_from_slice(record.as_bytes());
        if payload.len() > MAX_PAYLOAD {
            return Err(SpoolError::Io);
        }
        let (done, rx) = oneshot::channel();
        self.tx.send(Cmd::Append(frame(&payload), done)).map_err(|_| SpoolError::Io)?;
        rx.await.map_err(|_| SpoolError::Io)?
    }

    /// Seals the current segment and returns every sealed segment, oldest first.
    pub async fn seal(&self) -> Vec<PathBuf> {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Cmd::Seal(done)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Records not yet replayed.
    pub fn pending(&self) -> u64 {
        self.stats.pending_records.load(Ordering::Relaxed)
    }

    /// Reads a sealed segment: its valid records as `(token, record)`, in order,
    /// counting torn and corrupt records in the stats.
    ///
    /// Errors: the file cannot be read.
    pub fn read_segment(&self, path: &Path) -> std::io::Result<Vec<(String, String)>> {
        let data = fs::read(path)?;
        let (records, bad) = decode(&data);
        self.stats.torn.fetch_add(bad.torn, Ordering::Relaxed);
        self.stats.corrupt.fetch_add(bad.corrupt, Ordering::Relaxed);
        if bad.torn + bad.corrupt > 0 {
            tracing::warn!(
                spool.segment = %path.display(),
                torn = bad.torn,
                corrupt = bad.corrupt,
                "spool: skipped damaged records"
            );
        }
        Ok(records)
    }

    /// Deletes a fully replayed segment and updates the counters.
    ///
    /// Errors: the file cannot be removed.
    pub fn finish_segment(&self, path: &Path, records: u64) -> std::io::Result<()> {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(path)?;
        sub(&self.stats.bytes, len);
        sub(&self.stats.pending_records, records);
        self.stats.replayed.fetch_add(records, Ordering::Relaxed);
        Ok(())
    }
}

fn sub(a: &AtomicU64, n: u64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
}

/// Frames a payload: magic, length, CRC-32, payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Damaged records found while decoding.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Damage {
    /// A record cut off by the end of the file.
    pub torn: u64,
    /// Records whose checksum, length or payload is wrong.
    pub corrupt: u64,
}

/// Decodes a segment's bytes into `(token, record)` pairs, skipping damage.
pub fn decode(data: &[u8]) -> (Vec<(String, String)>, Damage) {
    let mut out = Vec::new();
    let mut bad = Damage::default();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < HEADER || !rest.starts_with(MAGIC) {
            if rest.len() < HEADER && MAGIC.starts_with(&rest[..rest.len().min(4)]) {
                bad.torn += 1;
                break;
            }
            // Lost sync (a damaged header): resume at the next marker.
            bad.corrupt += 1;
            match find(&rest[1..], MAGIC) {
                Some(i) => at += 1 + i,
                None => break,
            }
            continue;
        }
        let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if len > MAX_PAYLOAD {
            bad.corrupt += 1;
            match find(&rest[1..], MAGIC) {
                Some(i) => at += 1 + i,
                None => break,
            }
            continue;
        }
        if rest.len() < HEADER + len {
            bad.torn += 1;
            break;
        }
        let payload = &rest[HEADER..HEADER + len];
        at += HEADER + len;
        let parsed = (crc32fast::hash(payload) == crc)
            .then(|| std::str::from_utf8(payload).ok())
            .flatten()
            .and_then(|s| s.split_once('\t'))
            .filter(|(tok, rec)| uuid::Uuid::try_parse(tok).is_ok() && super::ClickRecord::from_packed(rec).is_some());
        match parsed {
            Some((tok, rec)) => out.push((tok.to_owned(), rec.to_owned())),
            None => bad.corrupt += 1,
        }
    }
    (out, bad)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn seq_of(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_prefix("clicks-")?.strip_suffix(".spool")?.parse().ok()
}

/// Segment files in `dir`, oldest first.
fn segments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| seq_of(&p).map(|s| (s, p)))
        .collect();
    v.sort();
    Ok(v.into_iter().map(|(_, p)| p).collect())
}

struct Writer {
    dir: PathBuf,
    seq: u64,
    file: Option<(File, PathBuf)>,
    max_bytes: u64,
    stats: Arc<SpoolStats>,
}

impl Writer {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Append(bytes, done) => batch.push((bytes, done)),
                    Cmd::Seal(done) => {
                        // Commit what came before the seal, then seal.
                        self.commit(std::mem::take(&mut batch));
                        self.file = None;
                        self.seq += 1;
                        let _ = done.send(segments(&self.dir).unwrap_or_default());
                    }
                }
                if batch.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<(Vec<u8>, Ack)>) {
        if batch.is_empty() {
            return;
        }
        let mut buf = Vec::new();
        let mut accepted = Vec::new();
        let mut size = self.stats.bytes.load(Ordering::Relaxed);
        for (bytes, done) in batch {
            if size + bytes.len() as u64 > self.max_bytes {
                let _ = done.send(Err(SpoolError::Full));
                continue;
            }
            size += bytes.len() as u64;
            buf.extend_from_slice(&bytes);
            accepted.push(done);
        }
        if accepted.is_empty() {
            return;
        }
        let result = self.write_sync(&buf);
        if result.is_ok() {
            self.stats.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            self.stats.appended.fetch_add(accepted.len() as u64, Ordering::Relaxed);
            self.stats.pending_records.fetch_add(accepted.len() as u64, Ordering::Relaxed);
        } else {
            // A failed write may leave a partial record: start a new segment; the
            // partial one is skipped as torn at replay.
            self.file = None;
            self.seq += 1;
            tracing::error!(spool.dir = %self.dir.display(), "spool: write or fsync failed");
        }
        for done in accepted {
            let _ = done.send(result.map_err(|_| SpoolError::Io));
        }
    }

    fn write_sync(&mut self, buf: &[u8]) -> Result<(), ()> {
        if self.file.is_none() {
            let path = self.dir.join(format!("clicks-{:020}.spool", self.seq));
            let f = OpenOptions::new().create(true).append(true).open(&path).map_err(|_| ())?;
            // Make the new file's directory entry durable too.
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            self.file = Some((f, path));
        }
        let Some((f, _)) = self.file.as_mut() else { return Err(()) };
        f.write_all(buf).map_err(|_| ())?;
        f.sync_data().map_err(|_| ())?;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Reads every byte of a file (tests and tools).
pub fn read_all(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(path)?.read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REC: &str = "1|1796018486772|65682d4500000000380339a5|c1|taobao|533000737918|||0011223344556677|app|";

    fn tok(i: u32) -> String {
        format!("01a22b0b-3df4-779a-a659-{i:012}")
    }

    #[tokio::test]
    async fn append_seal_read_finish() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..10 {
            spool.append(&tok(i), REC).await.unwrap();
        }
        assert_eq!(spool.pending(), 10);
        let sealed = spool.seal().await;
        assert_eq!(sealed.len(), 1);
        let recs = spool.read_segment(&sealed[0]).unwrap();
        assert_eq!(recs.len(), 10);
        assert_eq!(recs[3], (tok(3), REC.to_owned()));
        spool.finish_segment(&sealed[0], 10).unwrap();
        assert_eq!(spool.pending(), 0);
        assert_eq!(spool.stats.bytes.load(Ordering::Relaxed), 0);
        // Reopen finds nothing; new appends go to a later segment.
        spool.append(&tok(99), REC).await.unwrap();
        drop(spool);
        let again = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(again.pending(), 1);
    }

    #[tokio::test]
    async fn size_cap_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 300).unwrap();
        assert!(spool.append(&tok(1), REC).await.is_ok());
        assert!(spool.append(&tok(2), REC).await.is_ok());
        assert_eq!(spool.append(&tok(3), REC).await, Err(SpoolError::Full));
    }

    #[test]
    fn torn_tail_and_flipped_byte_skip_exactly_the_bad_record() {
        let mut data = Vec::new();
        for i in 0..5 {
            data.extend(frame(format!("{}\t{REC}", tok(i)).as_bytes()));
        }
        let one = data.len() / 5;
        // Flip a payload byte of record 2.
        let mut flipped = data.clone();
        flipped[2 * one + HEADER + 5] ^= 0x01;
        let (recs, bad) = decode(&flipped);
        assert_eq!(recs.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), [0, 1, 3, 4].map(tok));
        assert_eq!(bad, Damage { torn: 0, corrupt: 1 });
        // Flip a length byte of record 1: resync at the next marker.
        let mut len_flip = data.clone();
        len_flip[one + 5] ^= 0x40;
        let (recs, bad) = decode(&len_flip);
        assert_eq!(recs.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), [0, 2, 3, 4].map(tok));
        assert_eq!(bad.corrupt, 1);
        // Torn last record.
        let torn = &data[..data.len() - 7];
        let (recs, bad) = decode(torn);
        assert_eq!(recs.len(), 4);
        assert_eq!(bad, Damage { torn: 1, corrupt: 0 });
        let (recs, bad) = decode(&data[..4 * one + 3]);
        assert_eq!((recs.len(), bad.torn), (4, 1));
    }
}
