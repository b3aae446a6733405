//! Request paths as PBS reads them: split on `/`, empty segments dropped. `//api2/json/version`,
//! `/api2//json/version` and `/api2/json/version/` are one request. The stock client depends on
//! it: it builds every URI as `/` + path and passes its login and session-upgrade paths with a
//! leading `/` already, so every password login it makes is `POST //api2/json/access/ticket`.

/// The non-empty segments of a raw request path, still percent-encoded. Every decision the
/// server takes on a path (API routes, session endpoints, `/metrics`, the health probes) starts
/// from this.
pub fn raw_segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// True when the raw path, with empty segments ignored, is exactly `expected` (segments given
/// without slashes, e.g. `&["metrics"]`).
pub fn path_is(path: &str, expected: &[&str]) -> bool {
    raw_segments(path).eq(expected.iter().copied())
}

/// The path with empty segments removed and no leading slash: `//fixed_chunk/` → `fixed_chunk`.
pub fn normalized(path: &str) -> String {
    raw_segments(path).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_segments_are_dropped() {
        assert!(path_is("//metrics", &["metrics"]));
        assert!(path_is("/readyz/", &["readyz"]));
        assert!(!path_is("/readyz/x", &["readyz"]));
        assert!(!path_is("/", &["metrics"]));
        assert_eq!(normalized("//fixed_chunk/"), "fixed_chunk");
        assert_eq!(normalized("/a//b"), "a/b");
        assert_eq!(normalized("/"), "");
    }
}
