//! Domain types shared by every part of the daemon: checksums, asset ids and job states.
//!
//! These are the names the rest of the code speaks in. They carry no I/O.

use std::fmt;

use base64::Engine as _;

/// A SHA-1 digest of a file's bytes: the identity of an asset on an Immich server.
///
/// Immich sends it base64-encoded (28 chars) in asset objects and accepts hex (40 chars) or
/// base64 in `x-immich-checksum` and `bulk-upload-check`; `parse` takes either, like the
/// server's `fromChecksum`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checksum(pub [u8; 20]);

impl Checksum {
    /// Parses hex (40 chars) or base64 (28 chars). Anything else is `None`.
    pub fn parse(s: &str) -> Option<Checksum> {
        let bytes = if s.len() == 28 {
            base64::engine::general_purpose::STANDARD.decode(s).ok()?
        } else if s.len() == 40 {
            hex::decode(s).ok()?
        } else {
            return None;
        };
        Self::from_slice(&bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Checksum> {
        <[u8; 20]>::try_from(bytes).ok().map(Checksum)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({})", self.to_hex())
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The server's id of an asset (a UUID in Immich; opaque to us).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssetId(pub String);

impl fmt::Debug for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssetId({})", self.0)
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a file's job stands. Stored in SQLite as the lower-case name.
///
/// `Queued → Hashing → Checking → Uploading → Verifying → Done`, with the side exits
/// `Skipped`, `Retry` and `Failed` (see DESIGN.md "Job states").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Hashing,
    Checking,
    Uploading,
    Verifying,
    Done,
    Skipped,
    Retry,
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Hashing,
        JobState::Checking,
        JobState::Uploading,
        JobState::Verifying,
        JobState::Done,
        JobState::Skipped,
        JobState::Retry,
        JobState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Hashing => "hashing",
            JobState::Checking => "checking",
            JobState::Uploading => "uploading",
            JobState::Verifying => "verifying",
            JobState::Done => "done",
            JobState::Skipped => "skipped",
            JobState::Retry => "retry",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// States a crash can leave a job in; they go back to `Queued` on start.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            JobState::Hashing | JobState::Checking | JobState::Uploading | JobState::Verifying
        )
    }

    /// States that need no more work until the file changes or the user asks.
    pub fn is_settled(self) -> bool {
        matches!(self, JobState::Done | JobState::Skipped | JobState::Failed)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_parses_hex_and_base64_of_the_same_digest() {
        // SHA-1 of "abc".
        let hex = "a9993e364706816aba3e25717850c26c9cd0d89d";
        let b64 = "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=";
        let a = Checksum::parse(hex).expect("hex");
        let b = Checksum::parse(b64).expect("base64");
        assert_eq!(a, b);
        assert_eq!(a.to_hex(), hex);
        assert_eq!(a.to_base64(), b64);
        assert_eq!(Checksum::parse("abc"), None);
        assert_eq!(Checksum::parse(&"z".repeat(40)), None);
    }

    #[test]
    fn job_state_names_round_trip() {
        for st in JobState::ALL {
            assert_eq!(JobState::parse(st.as_str()), Some(st));
        }
        assert!(JobState::Uploading.is_in_flight());
        assert!(!JobState::Retry.is_in_flight());
    }
}
