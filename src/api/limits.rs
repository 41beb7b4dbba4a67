//! How much of an answer is read, and for how long: a size cap and a whole-body deadline per
//! route class (docs/RELIABILITY.md#hostile-answers-huge-trickled-or-malformed).
//!
//! The stall timeout alone ends a request only when *nothing* moves; a server (or a proxy)
//! trickling a reply a byte a second keeps it alive for ever, and one sending a gigabyte of
//! JSON would be read into memory whole. So every body read through the transport is bounded
//! twice: in bytes by the class of its route, and in time by a deadline for the whole body,
//! separate from the stall timeout of an upload (whose request body may take hours).
//!
//! Owns: the classes and their numbers. Must not: know credentials or read bodies itself.

use std::time::Duration;

/// What kind of answer a route gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplyClass {
    /// One object: server info, auth, the upload answer, one asset. Kilobytes.
    Small,
    /// A page or a list: the bulk check (up to 1000 results), search pages, seed listings,
    /// albums and stacks. Megabytes.
    List,
}

/// The cap of a small answer.
pub(crate) const SMALL_REPLY_MAX: usize = 1 << 20;
/// The cap of a page or list (a 1000-asset search page with EXIF is about 3 MB).
pub(crate) const LIST_REPLY_MAX: usize = 32 << 20;
/// A list may take this many times the small-reply deadline (32 MiB on a slow uplink).
const LIST_DEADLINE_FACTOR: u32 = 5;

impl ReplyClass {
    /// The class of `method path` (`path` as sent, with the API root: `/api/server/ping`).
    pub(crate) fn of(method: &str, path: &str) -> ReplyClass {
        let p = path.trim_end_matches('/');
        let small_prefixes = [
            "/server/",
            "/auth/",
            "/users/",
            "/api-keys/",
            "/.well-known/",
        ];
        let tail = |suffix: &str| p.ends_with(suffix);
        let single_asset = {
            // `/assets/<id>` (one asset), not `/assets/bulk-upload-check` or `/assets`.
            let mut segs = p.rsplit('/');
            let last = segs.next().unwrap_or("");
            segs.next() == Some("assets") && uuid::Uuid::parse_str(last).is_ok()
        };
        let upload_answer = method == "POST" && tail("/assets");
        if small_prefixes.iter().any(|s| p.contains(s)) || upload_answer || single_asset {
            ReplyClass::Small
        } else {
            ReplyClass::List
        }
    }

    pub(crate) fn max_bytes(self) -> usize {
        match self {
            ReplyClass::Small => SMALL_REPLY_MAX,
            ReplyClass::List => LIST_REPLY_MAX,
        }
    }

    /// How long the whole body may take to arrive: the stall timeout for a small answer
    /// (120 s by default, for kilobytes), five times that for a list.
    pub(crate) fn deadline(self, stall: Duration) -> Duration {
        match self {
            ReplyClass::Small => stall,
            ReplyClass::List => stall * LIST_DEADLINE_FACTOR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_into_classes() {
        let id = "0f1e2d3c-4b5a-4978-8877-665544332211";
        let small = [
            ("GET", "/api/server/ping".to_owned()),
            ("GET", "/api/users/me".to_owned()),
            ("POST", "/api/auth/validateToken".to_owned()),
            ("POST", "/api/assets".to_owned()),
            ("POST", "/assets".to_owned()),
            ("GET", format!("/api/assets/{id}")),
            ("GET", "/.well-known/immich".to_owned()),
        ];
        for (m, p) in &small {
            assert_eq!(ReplyClass::of(m, p), ReplyClass::Small, "{m} {p}");
        }
        let list = [
            ("POST", "/api/assets/bulk-upload-check".to_owned()),
            ("POST", "/api/search/metadata".to_owned()),
            ("GET", "/assets".to_owned()),
            ("GET", "/api/albums".to_owned()),
            ("GET", format!("/api/albums/{id}")),
        ];
        for (m, p) in &list {
            assert_eq!(ReplyClass::of(m, p), ReplyClass::List, "{m} {p}");
        }
        let stall = Duration::from_secs(120);
        assert!(ReplyClass::Small.deadline(stall) < ReplyClass::List.deadline(stall));
        assert!(ReplyClass::Small.max_bytes() < ReplyClass::List.max_bytes());
    }
}
