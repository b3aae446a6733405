//! A directory of a pxar archive as a streamed ZIP or zstd-compressed tar. The archive formats
//! come from the `zip`, `tar` and `zstd` crates, which write to blocking `std::io::Write`; so
//! the whole conversion runs on a blocking thread that pulls archive bytes through the async
//! reader and pushes output buffers into the response channel (bounded: a slow client slows
//! the conversion down instead of filling memory).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::datastore::{DidxSource, ReaderLease};
use crate::format::pxar::{
    mode, Archive, Entry, EntryKind, Metadata, PayloadRange, ReadAt, WalkEvent, Walker,
};
use crate::net::{octet_stream_channel, Body};

/// Output buffered before it is sent as one body frame.
const FRAME: usize = 256 * 1024;
/// Frames queued towards the client.
const QUEUE: usize = 4;
/// zstd level of tar downloads.
const ZSTD_LEVEL: i32 = 3;
/// File contents a download may emit beyond the archive's own size: hardlinked files are
/// repeated in a ZIP, and a hostile archive could repeat one payload endlessly.
const CONTENT_SLACK: u64 = 64 * 1024 * 1024;

/// Output format of a directory download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirFormat {
    Zip,
    TarZstd,
}

/// Starts the conversion and returns the streamed response.
pub fn stream(
    archive: Arc<Archive<DidxSource>>,
    dir: Entry,
    top: Vec<u8>,
    format: DirFormat,
    lease: Arc<ReaderLease>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || {
        let _lease = lease;
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(FRAME),
        };
        let budget = archive.meta_source().size()
            + archive.payload_source().map_or(0, |p| p.size())
            + CONTENT_SLACK;
        let mut job = Job {
            handle,
            archive: &archive,
            top,
            budget,
        };
        let result = match format {
            DirFormat::Zip => job.zip(dir, out),
            DirFormat::TarZstd => job.tar(dir, out),
        };
        if let Err(e) = result {
            tracing::warn!("pxar directory download stopped: {e}");
            let _ = tx.blocking_send(Err(e));
        }
    });
    octet_stream_channel(rx)
}

/// Buffers output and sends it into the response channel.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let frame = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(FRAME)));
        self.tx
            .blocking_send(Ok(frame))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= FRAME {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A file's contents as a blocking reader.
struct ContentReader<'a> {
    handle: Handle,
    archive: &'a Archive<DidxSource>,
    range: PayloadRange,
    at: u64,
    piece: Bytes,
}

impl Read for ContentReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.piece.is_empty() {
            if self.at >= self.range.size {
                return Ok(0);
            }
            self.piece = self
                .handle
                .block_on(self.archive.read_file(&self.range, self.at, 1024 * 1024))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if self.piece.is_empty() {
                return Err(std::io::Error::other("archive ended inside a file"));
            }
            self.at += self.piece.len() as u64;
        }
        let n = out.len().min(self.piece.len());
        out[..n].copy_from_slice(&self.piece[..n]);
        self.piece = self.piece.slice(n..);
        Ok(n)
    }
}

struct Job<'a> {
    handle: Handle,
    archive: &'a Archive<DidxSource>,
    /// First member path component (the requested directory's name; empty for the root).
    top: Vec<u8>,
    /// Content bytes still allowed.
    budget: u64,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl<'a> Job<'a> {
    fn member(&self, rel: &[Vec<u8>]) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = Vec::new();
        if !self.top.is_empty() {
            parts.push(&self.top);
        }
        parts.extend(rel.iter().map(Vec::as_slice));
        parts.join(&b'/')
    }

    fn next(&self, walker: &mut Walker<'a, DidxSource>) -> std::io::Result<Option<WalkEvent>> {
        self.handle.block_on(walker.next()).map_err(io_err)
    }

    /// The regular file behind a file or hardlink entry, with its content range.
    fn content(&mut self, entry: &Entry) -> std::io::Result<(Entry, ContentReader<'a>)> {
        let file = self
            .handle
            .block_on(self.archive.follow_hardlink(entry))
            .map_err(io_err)?;
        let range = self
            .handle
            .block_on(self.archive.payload_range(&file))
            .map_err(io_err)?;
        self.budget = self.budget.checked_sub(range.size).ok_or_else(|| {
            io_err("download stopped: the archive repeats more file contents than it holds")
        })?;
        let reader = ContentReader {
            handle: self.handle.clone(),
            archive: self.archive,
            range,
            at: 0,
            piece: Bytes::new(),
        };
        Ok((file, reader))
    }

    fn tar(&mut self, dir: Entry, out: ChannelWriter) -> std::io::Result<()> {
        let zstd = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
        let mut tar = tar::Builder::new(zstd);
        tar.mode(tar::HeaderMode::Complete);
        let mut walker = Walker::new(self.archive, dir).map_err(io_err)?;
        // hardlink target FILENAME offset → member path already written
        let mut written: HashMap<u64, Vec<u8>> = HashMap::new();
        while let Some(event) = self.next(&mut walker)? {
            let path = self.member(walker.path());
            let p = Path::new(std::ffi::OsStr::from_bytes(&path));
            match event {
                WalkEvent::Enter(e) if !path.is_empty() => {
                    let mut h = tar_header(&e.metadata, tar::EntryType::Directory, 0);
                    tar.append_data(&mut h, p, std::io::empty())?;
                }
                WalkEvent::Enter(_) | WalkEvent::Exit(_) => {}
                WalkEvent::Leaf(e) => match &e.kind {
                    EntryKind::File { .. } | EntryKind::Hardlink { .. } => {
                        let target = match e.kind {
                            EntryKind::Hardlink {
                                target_filename_start,
                                ..
                            } => Some(target_filename_start),
                            _ => e.filename_start,
                        };
                        if let Some(first) = target.and_then(|t| written.get(&t)) {
                            let mut h = tar_header(&e.metadata, tar::EntryType::Link, 0);
                            let first = Path::new(std::ffi::OsStr::from_bytes(first)).to_owned();
                            tar.append_link(&mut h, p, first)?;
                            continue;
                        }
                        let (file, reader) = self.content(&e)?;
                        let size = reader.range.size;
                        let mut h = tar_header(&file.metadata, tar::EntryType::Regular, size);
                        tar.append_data(&mut h, p, reader)?;
                        if let Some(t) = target {
                            written.insert(t, path.clone());
                        }
                    }
                    EntryKind::Symlink { target } => {
                        let mut h = tar_header(&e.metadata, tar::EntryType::Symlink, 0);
                        let t = Path::new(std::ffi::OsStr::from_bytes(target));
                        tar.append_link(&mut h, p, t)?;
                    }
                    EntryKind::Device { major, minor } => {
                        let kind = match e.metadata.stat.file_type() {
                            mode::IFBLK => tar::EntryType::Block,
                            _ => tar::EntryType::Char,
                        };
                        let mut h = tar_header(&e.metadata, kind, 0);
                        let (Ok(major), Ok(minor)) = (u32::try_from(*major), u32::try_from(*minor))
                        else {
                            continue; // not representable in a tar header
                        };
                        h.set_device_major(major)?;
                        h.set_device_minor(minor)?;
                        tar.append_data(&mut h, p, std::io::empty())?;
                    }
                    EntryKind::Fifo => {
                        let mut h = tar_header(&e.metadata, tar::EntryType::Fifo, 0);
                        tar.append_data(&mut h, p, std::io::empty())?;
                    }
                    EntryKind::Socket | EntryKind::Directory { .. } => {}
                },
            }
        }
        let zstd = tar.into_inner()?;
        let mut out = zstd.finish()?;
        out.flush()
    }

    fn zip(&mut self, dir: Entry, out: ChannelWriter) -> std::io::Result<()> {
        use zip::write::SimpleFileOptions;
        let mut zip = zip::ZipWriter::new_stream(out);
        let mut walker = Walker::new(self.archive, dir).map_err(io_err)?;
        let options = |meta: &Metadata, size: u64| {
            SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .compression_level(Some(1))
                .unix_permissions(meta.stat.permissions())
                .last_modified_time(dos_time(meta.stat.mtime_secs))
                .large_file(size >= u64::from(u32::MAX))
        };
        while let Some(event) = self.next(&mut walker)? {
            let path = self.member(walker.path());
            let name = String::from_utf8_lossy(&path).into_owned();
            match event {
                WalkEvent::Enter(e) if !path.is_empty() => {
                    zip.add_directory(format!("{name}/"), options(&e.metadata, 0))
                        .map_err(io_err)?;
                }
                WalkEvent::Enter(_) | WalkEvent::Exit(_) => {}
                WalkEvent::Leaf(e) => match &e.kind {
                    EntryKind::File { .. } | EntryKind::Hardlink { .. } => {
                        let (file, mut reader) = self.content(&e)?;
                        let size = reader.range.size;
                        zip.start_file(name, options(&file.metadata, size))
                            .map_err(io_err)?;
                        std::io::copy(&mut reader, &mut zip)?;
                    }
                    EntryKind::Symlink { target } => {
                        let target = String::from_utf8_lossy(target).into_owned();
                        zip.add_symlink(name, target, options(&e.metadata, 0))
                            .map_err(io_err)?;
                    }
                    _ => {} // devices, FIFOs and sockets have no ZIP form
                },
            }
        }
        let mut out = zip.finish().map_err(io_err)?.into_inner();
        out.flush()
    }
}

/// A GNU tar header with the entry's mode, owner and mtime.
fn tar_header(meta: &Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.stat.permissions());
    h.set_uid(u64::from(meta.stat.uid));
    h.set_gid(u64::from(meta.stat.gid));
    h.set_mtime(u64::try_from(meta.stat.mtime_secs).unwrap_or(0));
    h.set_size(size);
    h
}

/// ZIP's DOS time (UTC fields) for Unix seconds; outside 1980–2107 the format's zero date.
fn dos_time(secs: i64) -> zip::DateTime {
    use chrono::{Datelike, Timelike};
    chrono::DateTime::from_timestamp(secs, 0)
        .and_then(|t| {
            zip::DateTime::from_date_and_time(
                u16::try_from(t.year()).ok()?,
                t.month() as u8,
                t.day() as u8,
                t.hour() as u8,
                t.minute() as u8,
                t.second() as u8,
            )
            .ok()
        })
        .unwrap_or_default()
}
