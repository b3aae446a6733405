//! The catalog (`catalog.pcat1`) of a legacy-mode backup run: magic, one table per directory
//! (children before parents), the root table with one directory per archive, and the root
//! table's offset as the last 8 bytes.

/// Magic of catalog format 1.
pub const MAGIC: [u8; 8] = [0x91, 0xfd, 0x60, 0xf9, 0xc4, 0x67, 0x58, 0xd5];

/// One directory's entries as the catalog lists them (encoding order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogDir {
    pub items: Vec<CatalogItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogItem {
    Dir(Vec<u8>, CatalogDir),
    /// name, size, mtime (whole seconds)
    File(Vec<u8>, u64, i64),
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Block(Vec<u8>),
    Char(Vec<u8>),
    Fifo(Vec<u8>),
    Socket(Vec<u8>),
}

pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        return put_u64(out, v as u64);
    }
    let mut m = v.unsigned_abs();
    while m > 0 {
        out.push((m as u8 & 0x7f) | 0x80);
        m >>= 7;
    }
    out.push(0);
}

/// Writes a catalog incrementally: each archive's tables as soon as the archive is done.
#[derive(Debug, Default)]
pub struct CatalogWriter {
    offset: u64,
    /// (archive file name, offset of its root table)
    archives: Vec<(String, u64)>,
}

impl CatalogWriter {
    /// The magic (the first bytes of the catalog).
    pub fn start(&mut self) -> Vec<u8> {
        self.offset = MAGIC.len() as u64;
        MAGIC.to_vec()
    }

    /// The tables of one archive (`name` is the server file name, e.g. `root.pxar.didx`).
    pub fn add_archive(&mut self, name: &str, root: &CatalogDir) -> Vec<u8> {
        let mut out = Vec::new();
        let table = self.table(root, &mut out);
        self.archives.push((name.to_string(), table));
        out
    }

    /// The root table and the root pointer (the last bytes of the catalog).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let start = self.offset;
        let mut body = Vec::new();
        put_u64(&mut body, self.archives.len() as u64);
        for (name, table) in &self.archives {
            body.push(b'd');
            put_u64(&mut body, name.len() as u64);
            body.extend_from_slice(name.as_bytes());
            put_u64(&mut body, start - table);
        }
        put_u64(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
        out.extend_from_slice(&start.to_le_bytes());
        self.offset += out.len() as u64;
        out
    }

    fn table(&mut self, dir: &CatalogDir, out: &mut Vec<u8>) -> u64 {
        let mut children = Vec::new();
        for item in &dir.items {
            if let CatalogItem::Dir(_, sub) = item {
                children.push(self.table(sub, out));
            }
        }
        let start = self.offset;
        let mut body = Vec::new();
        put_u64(&mut body, dir.items.len() as u64);
        let mut child = children.into_iter();
        for item in &dir.items {
            let (t, name) = match item {
                CatalogItem::Dir(n, _) => (b'd', n),
                CatalogItem::File(n, ..) => (b'f', n),
                CatalogItem::Symlink(n) => (b'l', n),
                CatalogItem::Hardlink(n) => (b'h', n),
                CatalogItem::Block(n) => (b'b', n),
                CatalogItem::Char(n) => (b'c', n),
                CatalogItem::Fifo(n) => (b'p', n),
                CatalogItem::Socket(n) => (b's', n),
            };
            body.push(t);
            put_u64(&mut body, name.len() as u64);
            body.extend_from_slice(name);
            match item {
                CatalogItem::Dir(..) => put_u64(&mut body, start - child.next().unwrap_or(start)),
                CatalogItem::File(_, size, mtime) => {
                    put_u64(&mut body, *size);
                    put_i64(&mut body, *mtime);
                }
                _ => {}
            }
        }
        let before = out.len();
        put_u64(out, body.len() as u64);
        out.extend_from_slice(&body);
        self.offset += (out.len() - before) as u64;
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let mut o = Vec::new();
        put_i64(&mut o, 1430487000);
        assert_eq!(o, [0xd8, 0xff, 0x8d, 0xaa, 0x05]);
        let mut o = Vec::new();
        put_i64(&mut o, -128);
        assert_eq!(o, [0x80, 0x81, 0]);
    }

    /// One archive with an empty root: magic, empty table, root table, pointer.
    #[test]
    fn layout() {
        let mut w = CatalogWriter::default();
        let mut all = w.start();
        all.extend(w.add_archive("a.pxar.didx", &CatalogDir::default()));
        all.extend(w.finish());
        // table of the archive root at 8: len 1, count 0
        assert_eq!(&all[8..10], &[1, 0]);
        let root = u64::from_le_bytes(all[all.len() - 8..].try_into().unwrap());
        assert_eq!(root, 10);
        assert_eq!(all[10], 15); // body: count, 'd', len, 11 name bytes, back-offset
        assert_eq!(all[all.len() - 9], 2); // back-offset 10 - 8
    }
}
