//! Encodes a directory tree as a pxar archive, the way the stock client lays it out: entries
//! sorted by raw name bytes, hardlinks as back-references to the first name, goodbye tables
//! as binary search trees. Unified (`.pxar`, format 1) or split (`.mpxar` format 2 plus a
//! payload stream); in split mode a previous archive enables metadata-mode reuse.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{ClientError, Result};
use crate::wire::Digest;

use super::catalog::{CatalogDir, CatalogItem};
use super::decoder::{decode, DecodedKind};
use super::format::*;
use super::payload::PayloadStream;

/// Metadata mode keeps reusing previous chunks while the unreferenced bytes they drag along
/// stay at or below this share of the reused bytes.
const PADDING_THRESHOLD: f64 = 0.1;

/// How to encode.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeOptions {
    /// Split archive: metadata stream plus payload stream.
    pub split: bool,
}

/// A regular file of the previous snapshot's metadata archive.
#[derive(Debug, Clone, Copy)]
struct PrevFile {
    stat: Stat,
    size: u64,
    /// Offset of its PAYLOAD header in the previous payload stream.
    offset: u64,
}

/// What metadata mode knows about the previous snapshot.
#[derive(Debug, Clone, Default)]
pub struct PreviousArchive {
    files: HashMap<Vec<u8>, PrevFile>,
    /// Previous payload index: (digest, start, length).
    chunks: Vec<(Digest, u64, u64)>,
}

impl PreviousArchive {
    /// From the previous `.mpxar` bytes and the previous `.ppxar` index entries.
    pub fn new(mpxar: &[u8], payload_chunks: Vec<(Digest, u64, u64)>) -> Result<Self> {
        let mut files = HashMap::new();
        for e in decode(mpxar, None)? {
            if let DecodedKind::File {
                size,
                payload_offset: Some(offset),
                ..
            } = e.kind
            {
                files.insert(
                    e.path.clone(),
                    PrevFile {
                        stat: e.stat,
                        size,
                        offset,
                    },
                );
            }
        }
        Ok(Self {
            files,
            chunks: payload_chunks,
        })
    }

    fn chunk_at(&self, offset: u64) -> usize {
        self.chunks.partition_point(|c| c.1 + c.2 <= offset)
    }
}

/// The encoded archive.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The unified archive, or the metadata archive of a split pair.
    pub archive: Vec<u8>,
    pub payload: Option<PayloadStream>,
    /// The tree as the catalog lists it.
    pub catalog: CatalogDir,
    /// Files whose payload came from reused previous chunks.
    pub reused_files: usize,
    /// Content bytes of those files.
    pub reused_bytes: u64,
    /// Split archives: files whose payload was encoded anew (new or changed files, and
    /// unchanged ones whose previous chunks would have carried too much padding).
    pub encoded_files: usize,
}

struct Pending {
    abs: PathBuf,
    prev_offset: u64,
    size: u64,
    /// Position of the PAYLOAD_REF offset field in the metadata stream.
    ref_pos: usize,
    fstart: u64,
    /// Position of the goodbye record's size field, once the directory was closed.
    goodbye_size_pos: Option<usize>,
}

struct Enc<'a> {
    out: Vec<u8>,
    payload: Option<PayloadStream>,
    prev: Option<&'a PreviousArchive>,
    /// (dev, inode) of multiply linked files → (FILENAME offset, path).
    links: HashMap<(u64, u64), (u64, Vec<u8>)>,
    pending: Vec<Pending>,
    /// Freshly written split files: FILENAME offset → file size (goodbye records of
    /// fresh files in a metadata archive count the payload too).
    fresh: HashMap<u64, u64>,
    /// Last injected previous chunk and the new stream offset right after it.
    injected: Option<(usize, u64)>,
    reused_files: usize,
    reused_bytes: u64,
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> ClientError {
    ClientError::io(format!("{what} {}", p.display()), e)
}

/// Encodes the tree under `root`. `previous` enables metadata-mode reuse (split only).
pub fn encode_tree(
    root: &Path,
    opts: EncodeOptions,
    previous: Option<&PreviousArchive>,
) -> Result<Encoded> {
    let mut enc = Enc {
        out: Vec::new(),
        payload: opts.split.then(PayloadStream::new),
        prev: previous.filter(|_| opts.split),
        links: HashMap::new(),
        pending: Vec::new(),
        fresh: HashMap::new(),
        injected: None,
        reused_files: 0,
        reused_bytes: 0,
    };
    if opts.split {
        put_item(&mut enc.out, FORMAT_VERSION, &2u64.to_le_bytes());
    }
    let meta = std::fs::symlink_metadata(root).map_err(|e| io_err("stat", root, e))?;
    if !meta.is_dir() {
        return Err(ClientError::Format(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let catalog = enc.dir(root, &[], &meta, None)?;
    enc.flush_pending()?;
    let mut payload = enc.payload.take();
    if let Some(p) = payload.as_mut() {
        p.finish();
    }
    Ok(Encoded {
        archive: enc.out,
        payload,
        catalog,
        reused_files: enc.reused_files,
        reused_bytes: enc.reused_bytes,
        encoded_files: enc.fresh.len(),
    })
}

impl Enc<'_> {
    /// Encodes a directory (ENTRY, children, GOODBYE); `fstart` is its FILENAME offset.
    fn dir(
        &mut self,
        abs: &Path,
        rel: &[u8],
        meta: &std::fs::Metadata,
        fstart: Option<u64>,
    ) -> Result<CatalogDir> {
        let entry_start = self.out.len() as u64;
        put_item(&mut self.out, ENTRY, &Stat::from_metadata(meta).to_bytes());
        let mut names: Vec<OsString> = std::fs::read_dir(abs)
            .map_err(|e| io_err("read dir", abs, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| io_err("read dir", abs, e))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut catalog = CatalogDir::default();
        // (hash, FILENAME offset, end, is a file whose goodbye size may grow)
        let mut records: Vec<(u64, u64, u64)> = Vec::new();
        for name in names {
            let path = abs.join(&name);
            let name = name.into_vec();
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                [rel, b"/", &name].concat()
            };
            let child_start = self.out.len() as u64;
            let mut fname = name.clone();
            fname.push(0);
            put_item(&mut self.out, FILENAME, &fname);
            let item = self.child(&path, &child_rel, &name, child_start)?;
            catalog.items.push(item);
            records.push((name_hash(&name), child_start, self.out.len() as u64));
        }
        let goodbye_start = self.out.len() as u64;
        records.sort_by_key(|r| r.0);
        let ordered = goodbye_order(&records);
        put_header(&mut self.out, GOODBYE, 24 * (ordered.len() as u64 + 1));
        for (hash, child_start, end) in ordered {
            self.out.extend_from_slice(&hash.to_le_bytes());
            self.out
                .extend_from_slice(&(goodbye_start - child_start).to_le_bytes());
            let size_pos = self.out.len();
            let extra = self.fresh.get(&child_start).copied().unwrap_or(0);
            self.out
                .extend_from_slice(&(end - child_start + extra).to_le_bytes());
            if let Some(p) = self.pending.iter_mut().find(|p| p.fstart == child_start) {
                p.goodbye_size_pos = Some(size_pos);
            }
        }
        let full = 16 + 24 * (records.len() as u64 + 1);
        let back = goodbye_start - if fstart.is_some() { entry_start } else { 0 };
        self.out
            .extend_from_slice(&GOODBYE_TAIL_MARKER.to_le_bytes());
        self.out.extend_from_slice(&back.to_le_bytes());
        self.out.extend_from_slice(&full.to_le_bytes());
        Ok(catalog)
    }

    fn child(&mut self, abs: &Path, rel: &[u8], name: &[u8], fstart: u64) -> Result<CatalogItem> {
        let meta = std::fs::symlink_metadata(abs).map_err(|e| io_err("stat", abs, e))?;
        let stat = Stat::from_metadata(&meta);
        let name = name.to_vec();
        match stat.file_type() {
            S_IFDIR => {
                let sub = self.dir(abs, rel, &meta, Some(fstart))?;
                Ok(CatalogItem::Dir(name, sub))
            }
            S_IFREG => {
                if meta.nlink() > 1 {
                    let key = (meta.dev(), meta.ino());
                    if let Some((target, path)) = self.links.get(&key) {
                        let mut body = (fstart - target).to_le_bytes().to_vec();
                        body.extend_from_slice(path);
                        body.push(0);
                        put_item(&mut self.out, HARDLINK, &body);
                        return Ok(CatalogItem::Hardlink(name));
                    }
                    self.links.insert(key, (fstart, rel.to_vec()));
                }
                put_item(&mut self.out, ENTRY, &stat.to_bytes());
                let size = self.file(abs, rel, &stat, meta.len(), fstart)?;
                Ok(CatalogItem::File(name, size, stat.mtime_secs))
            }
            S_IFLNK => {
                put_item(&mut self.out, ENTRY, &stat.to_bytes());
                let target = std::fs::read_link(abs).map_err(|e| io_err("readlink", abs, e))?;
                let mut body = target.into_os_string().into_vec();
                body.push(0);
                put_item(&mut self.out, SYMLINK, &body);
                Ok(CatalogItem::Symlink(name))
            }
            S_IFBLK | S_IFCHR => {
                put_item(&mut self.out, ENTRY, &stat.to_bytes());
                let (major, minor) = split_rdev(meta.rdev());
                let mut body = major.to_le_bytes().to_vec();
                body.extend_from_slice(&minor.to_le_bytes());
                put_item(&mut self.out, DEVICE, &body);
                Ok(match stat.file_type() {
                    S_IFBLK => CatalogItem::Block(name),
                    _ => CatalogItem::Char(name),
                })
            }
            S_IFIFO => {
                put_item(&mut self.out, ENTRY, &stat.to_bytes());
                Ok(CatalogItem::Fifo(name))
            }
            _ => {
                put_item(&mut self.out, ENTRY, &stat.to_bytes());
                Ok(CatalogItem::Socket(name))
            }
        }
    }

    /// Writes a regular file's content item; returns its size.
    fn file(&mut self, abs: &Path, rel: &[u8], stat: &Stat, len: u64, fstart: u64) -> Result<u64> {
        if self.payload.is_none() {
            let data = std::fs::read(abs).map_err(|e| io_err("read", abs, e))?;
            put_item(&mut self.out, PAYLOAD, &data);
            return Ok(data.len() as u64);
        }
        let reusable = self
            .prev
            .and_then(|p| p.files.get(rel))
            .filter(|p| p.stat == *stat && p.size == len)
            .copied();
        let ref_pos = self.out.len() + 16;
        let mut body = 0u64.to_le_bytes().to_vec();
        if let Some(prev) = reusable {
            body.extend_from_slice(&prev.size.to_le_bytes());
            put_item(&mut self.out, PAYLOAD_REF, &body);
            let last_end = self.pending.last().map(|p| p.prev_offset + 16 + p.size);
            if last_end.is_some_and(|end| prev.offset < end) {
                self.flush_pending()?;
            }
            self.pending.push(Pending {
                abs: abs.to_path_buf(),
                prev_offset: prev.offset,
                size: prev.size,
                ref_pos,
                fstart,
                goodbye_size_pos: None,
            });
            return Ok(prev.size);
        }
        self.flush_pending()?;
        let data = std::fs::read(abs).map_err(|e| io_err("read", abs, e))?;
        body.extend_from_slice(&(data.len() as u64).to_le_bytes());
        put_item(&mut self.out, PAYLOAD_REF, &body);
        self.append_payload(&data, ref_pos, fstart);
        Ok(data.len() as u64)
    }

    /// Appends a file's PAYLOAD item to the payload stream and points its reference at it.
    fn append_payload(&mut self, data: &[u8], ref_pos: usize, fstart: u64) {
        let Some(payload) = self.payload.as_mut() else {
            return;
        };
        let offset = payload.len();
        let mut item = Vec::with_capacity(16 + data.len());
        put_item(&mut item, PAYLOAD, data);
        payload.append(&item);
        self.out[ref_pos..ref_pos + 8].copy_from_slice(&offset.to_le_bytes());
        self.fresh.insert(fstart, data.len() as u64);
    }

    /// Decides about the files waiting for reuse: inject the previous chunks they lie in when
    /// the unreferenced part of those chunks is small enough, else encode them anew.
    fn flush_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let (Some(prev), Some(payload_len)) = (self.prev, self.payload.as_ref().map(|p| p.len()))
        else {
            return Ok(());
        };
        let first = pending[0].prev_offset;
        let last_end = pending
            .last()
            .map(|p| p.prev_offset + 16 + p.size)
            .unwrap_or(first);
        let i = prev.chunk_at(first);
        let j = prev.chunk_at(last_end - 1);
        let in_range = j < prev.chunks.len();
        let span_start = prev.chunks.get(i).map_or(0, |c| c.1);
        let span_end = prev.chunks.get(j).map_or(0, |c| c.1 + c.2);
        let referenced: u64 = pending.iter().map(|p| 16 + p.size).sum();
        let span = span_end.saturating_sub(span_start);
        let reuse = in_range
            && span >= referenced
            && (span - referenced) as f64 <= PADDING_THRESHOLD * span as f64;
        if !reuse {
            for p in &pending {
                let data = std::fs::read(&p.abs).map_err(|e| io_err("read", &p.abs, e))?;
                if data.len() as u64 != p.size {
                    return Err(ClientError::Format(format!(
                        "{} changed size while being backed up",
                        p.abs.display()
                    )));
                }
                self.append_payload(&data, p.ref_pos, p.fstart);
                if let Some(pos) = p.goodbye_size_pos {
                    let old =
                        u64::from_le_bytes(self.out[pos..pos + 8].try_into().unwrap_or_default());
                    self.out[pos..pos + 8].copy_from_slice(&(old + p.size).to_le_bytes());
                }
            }
            return Ok(());
        }
        // Where previous chunk i starts in the new stream.
        let (from, new_start_of_i) = match self.injected {
            Some((k, end)) if k >= i && k <= j && end == payload_len => {
                let k_end = prev.chunks[k].1 + prev.chunks[k].2;
                (k + 1, end - (k_end - span_start))
            }
            _ => (i, payload_len),
        };
        let chunks: Vec<(Digest, u64)> = prev.chunks[from..=j].iter().map(|c| (c.0, c.2)).collect();
        if let Some(payload) = self.payload.as_mut() {
            payload.inject(&chunks);
            self.injected = Some((j, payload.len()));
        }
        for p in &pending {
            let offset = new_start_of_i + (p.prev_offset - span_start);
            self.out[p.ref_pos..p.ref_pos + 8].copy_from_slice(&offset.to_le_bytes());
            self.reused_files += 1;
            self.reused_bytes += p.size;
        }
        Ok(())
    }
}
