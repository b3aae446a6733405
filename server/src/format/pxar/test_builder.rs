//! A small archive builder for the reader's unit tests (the full encoder lives in the test
//! client). It writes correct archives from a tree description; tests then corrupt them.

use std::collections::HashMap;

use super::entry::{mode, Stat};
use super::goodbye::{hash_filename, GoodbyeItem};
use super::header::{htype, Header};

pub enum Node {
    Dir(Stat, Vec<(&'static str, Node)>),
    File(Stat, Vec<u8>),
    Symlink(Stat, &'static str),
    /// Path (from the root, no leading `/`) of a file archived earlier.
    Hardlink(&'static str),
    Device(Stat, u64, u64),
    Fifo(Stat),
}

pub fn stat(kind: u64, perm: u64) -> Stat {
    Stat {
        mode: kind | perm,
        flags: 0,
        uid: 1000,
        gid: 100,
        mtime_secs: 1_700_000_000,
        mtime_nanos: 5,
    }
}

pub fn dir(children: Vec<(&'static str, Node)>) -> Node {
    Node::Dir(stat(mode::IFDIR, 0o755), children)
}

pub fn file(data: &[u8]) -> Node {
    Node::File(stat(mode::IFREG, 0o644), data.to_vec())
}

/// The archive (and payload stream for split archives).
pub struct Built {
    pub meta: Vec<u8>,
    pub payload: Option<Vec<u8>>,
}

struct B {
    out: Vec<u8>,
    payload: Option<Vec<u8>>,
    files: HashMap<String, u64>,
}

pub fn item(out: &mut Vec<u8>, t: u64, body: &[u8]) {
    out.extend_from_slice(
        &Header {
            htype: t,
            full_size: 16 + body.len() as u64,
        }
        .to_bytes(),
    );
    out.extend_from_slice(body);
}

/// Sorted records laid out as an implicit binary search tree (in-order fill).
pub fn bst_layout<T: Copy>(sorted: &[T]) -> Vec<T> {
    fn fill<T: Copy>(i: usize, sorted: &[T], next: &mut usize, out: &mut [Option<T>]) {
        if i >= sorted.len() {
            return;
        }
        fill(2 * i + 1, sorted, next, out);
        out[i] = Some(sorted[*next]);
        *next += 1;
        fill(2 * i + 2, sorted, next, out);
    }
    let mut out = vec![None; sorted.len()];
    fill(0, sorted, &mut 0, &mut out);
    out.into_iter().map(|x| x.expect("filled")).collect()
}

pub fn build(root: &Node, split: bool) -> Built {
    build_with(root, split, None)
}

pub fn build_with(root: &Node, split: bool, prelude: Option<&[u8]>) -> Built {
    let mut b = B {
        out: Vec::new(),
        payload: None,
        files: HashMap::new(),
    };
    if split {
        item(&mut b.out, htype::FORMAT_VERSION, &2u64.to_le_bytes());
        if let Some(p) = prelude {
            item(&mut b.out, htype::PRELUDE, p);
        }
        let mut p = Vec::new();
        item(&mut p, htype::PAYLOAD_START_MARKER, &[]);
        b.payload = Some(p);
    }
    let Node::Dir(st, children) = root else {
        panic!("root must be a directory");
    };
    b.dir(st, children, "", true);
    if let Some(p) = b.payload.as_mut() {
        item(p, htype::PAYLOAD_TAIL_MARKER, &[]);
    }
    Built {
        meta: b.out,
        payload: b.payload,
    }
}

impl B {
    fn dir(&mut self, st: &Stat, children: &[(&'static str, Node)], path: &str, root: bool) {
        let entry_start = self.out.len() as u64;
        item(&mut self.out, htype::ENTRY, &st.to_bytes());
        let mut records = Vec::new();
        for (name, node) in children {
            let fstart = self.out.len() as u64;
            let mut fname = name.as_bytes().to_vec();
            fname.push(0);
            item(&mut self.out, htype::FILENAME, &fname);
            let child_path = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}/{name}")
            };
            self.node(node, &child_path, fstart);
            records.push((
                hash_filename(name.as_bytes()),
                fstart,
                self.out.len() as u64,
            ));
        }
        let gstart = self.out.len() as u64;
        records.sort_by_key(|r| r.0);
        let mut body = Vec::new();
        for (hash, fstart, end) in bst_layout(&records) {
            let rec = GoodbyeItem {
                hash,
                offset: gstart - fstart,
                size: end - fstart,
            };
            body.extend_from_slice(&rec.to_bytes());
        }
        let full = 16 + 24 * (records.len() as u64 + 1);
        let tail = GoodbyeItem {
            hash: htype::GOODBYE_TAIL_MARKER,
            offset: gstart - if root { 0 } else { entry_start },
            size: full,
        };
        body.extend_from_slice(&tail.to_bytes());
        item(&mut self.out, htype::GOODBYE, &body);
    }

    fn node(&mut self, node: &Node, path: &str, fstart: u64) {
        match node {
            Node::Dir(st, children) => self.dir(st, children, path, false),
            Node::File(st, data) => {
                self.files.insert(path.to_string(), fstart);
                item(&mut self.out, htype::ENTRY, &st.to_bytes());
                match self.payload.as_mut() {
                    Some(p) => {
                        let off = p.len() as u64;
                        item(p, htype::PAYLOAD, data);
                        let mut r = off.to_le_bytes().to_vec();
                        r.extend_from_slice(&(data.len() as u64).to_le_bytes());
                        item(&mut self.out, htype::PAYLOAD_REF, &r);
                    }
                    None => item(&mut self.out, htype::PAYLOAD, data),
                }
            }
            Node::Symlink(st, target) => {
                item(&mut self.out, htype::ENTRY, &st.to_bytes());
                let mut t = target.as_bytes().to_vec();
                t.push(0);
                item(&mut self.out, htype::SYMLINK, &t);
            }
            Node::Hardlink(target) => {
                let tstart = self.files[*target];
                let mut body = (fstart - tstart).to_le_bytes().to_vec();
                body.extend_from_slice(target.as_bytes());
                body.push(0);
                item(&mut self.out, htype::HARDLINK, &body);
            }
            Node::Device(st, major, minor) => {
                item(&mut self.out, htype::ENTRY, &st.to_bytes());
                let mut d = major.to_le_bytes().to_vec();
                d.extend_from_slice(&minor.to_le_bytes());
                item(&mut self.out, htype::DEVICE, &d);
            }
            Node::Fifo(st) => item(&mut self.out, htype::ENTRY, &st.to_bytes()),
        }
    }
}
