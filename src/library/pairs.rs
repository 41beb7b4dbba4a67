//! Which files belong together (docs/ARCHITECTURE.md#library): a Live Photo (a still and a
//! video with the same stem in the same folder) and a stack (a RAW and a JPEG/HEIC with the
//! same stem in the same folder). Pure rules on names; the siblings come from
//! `db::library::with_prefix`.
//!
//! Must not: touch the database or the network.

use crate::config::StackPrimary;
use crate::db::library::{Group, Sibling};

/// The still of a Live Photo waits at most this long for its video to be uploaded (so that
/// it can go up with `livePhotoVideoId`); after that it goes up alone and the two are linked
/// once both are on the server. Bounded so that a video that never finishes (too big,
/// refused) does not hold the still back.
pub const PAIR_WAIT_MS: i64 = 30_000;
/// How soon a waiting still looks again.
pub const PAIR_RELOOK_MS: i64 = 1_000;

/// Stills of a Live Photo, in order of preference when a folder holds several with one stem
/// (the camera's own HEIC before a converted JPEG).
const LIVE_STILLS: [&str; 5] = ["heic", "heif", "hif", "jpg", "jpeg"];
/// Videos of a Live Photo, in order of preference.
const LIVE_VIDEOS: [&str; 2] = ["mov", "mp4"];
/// The processed half of a RAW + JPEG pair, JPEG first.
const STACK_TOPS: [&str; 5] = ["jpg", "jpeg", "heic", "heif", "hif"];
/// Camera RAW formats the server takes.
const RAWS: [&str; 22] = [
    "dng", "cr2", "cr3", "crw", "nef", "nrw", "arw", "sr2", "srf", "raf", "orf", "rw2", "pef",
    "srw", "3fr", "erf", "kdc", "mrw", "x3f", "iiq", "rwl", "raw",
];

/// Whether a file of this (lower-case) extension can be a Live Photo's still.
pub fn is_still_ext(ext: &str) -> bool {
    LIVE_STILLS.contains(&ext)
}

/// Whether a video named like a Live Photo's exists on disk beside `prefix` (`dir/stem.`):
/// a few `lstat`s, so that a still without one asks the database nothing. The usual spellings
/// only; a video named otherwise (`.Mov`) is still linked after both are uploaded.
pub fn video_beside(prefix: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    ["MOV", "mov", "MP4", "mp4"].iter().any(|ext| {
        let mut p = prefix.to_vec();
        p.extend_from_slice(ext.as_bytes());
        std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(&p)).is_ok_and(|m| m.is_file())
    })
}

/// `dir/stem.` and the lower-case extension of a path, when its name has both.
pub fn split_stem(path: &[u8]) -> Option<(&[u8], String)> {
    let name_start = path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let dot = path[name_start..].iter().rposition(|&b| b == b'.')? + name_start;
    if dot == name_start || dot + 1 == path.len() {
        return None;
    }
    let ext = String::from_utf8_lossy(&path[dot + 1..]).to_ascii_lowercase();
    Some((&path[..=dot], ext))
}

/// The siblings that share `prefix` (`dir/stem.`) exactly, with their extension: a longer
/// stem with the same start (`IMG_1.5.jpg`) is not one.
fn with_ext<'a>(prefix: &[u8], siblings: &'a [Sibling]) -> Vec<(&'a Sibling, String)> {
    siblings
        .iter()
        .filter(|s| s.state != "skipped" && s.state != "failed")
        .filter_map(|s| {
            let rest = s.path.strip_prefix(prefix)?;
            if rest.is_empty() || rest.contains(&b'.') || rest.contains(&b'/') {
                return None;
            }
            Some((s, String::from_utf8_lossy(rest).to_ascii_lowercase()))
        })
        .collect()
}

fn rank(list: &[&str], ext: &str) -> Option<usize> {
    list.iter().position(|e| *e == ext)
}

/// The best of the siblings by `list` (then by path, for a stable choice).
fn best<'a>(list: &[&str], files: &[(&'a Sibling, String)]) -> Option<&'a Sibling> {
    files
        .iter()
        .filter_map(|(s, ext)| rank(list, ext).map(|r| (r, &s.path, *s)))
        .min_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
        .map(|(_, _, s)| s)
}

/// The files `ext` (of `prefix`) would form a Live Photo or a stack with, in any state
/// (queued, failed…): what must be safe on the server before the after-upload task removes
/// this one (docs/ARCHITECTURE.md#after-upload).
pub fn partners<'a>(prefix: &[u8], ext: &str, siblings: &'a [Sibling]) -> Vec<&'a Sibling> {
    let is = |list: &[&str], e: &str| list.contains(&e);
    siblings
        .iter()
        .filter(|s| {
            let Some(rest) = s.path.strip_prefix(prefix) else {
                return false;
            };
            if rest.is_empty() || rest.contains(&b'.') || rest.contains(&b'/') {
                return false;
            }
            let other = String::from_utf8_lossy(rest).to_ascii_lowercase();
            (is(&LIVE_STILLS, ext) && is(&LIVE_VIDEOS, &other))
                || (is(&LIVE_VIDEOS, ext) && is(&LIVE_STILLS, &other))
                || (is(&STACK_TOPS, ext) && is(&RAWS, &other))
                || (is(&RAWS, ext) && is(&STACK_TOPS, &other))
        })
        .collect()
}

/// The least digits after `BURST` for a name to count as a burst frame: the shortest
/// camera burst id seen is a date (`20240501`); fewer could be anything.
const BURST_DIGITS: usize = 8;

/// The burst a file belongs to by its name (docs/ARCHITECTURE.md#library): a `BURST` token
/// (upper case, at the start of the name or after `_`) followed by at least 8 digits, as
/// Google Camera and Pixel phones name burst frames (`IMG_20240501_123456_BURST20240501123456.jpg`,
/// `..._BURST20240501123456_COVER.jpg`). Returns the folder (with its slash), the token
/// (`BURST` and its digits: the burst's id) and whether the frame is the cover (`_COVER`
/// after the token).
pub fn burst_of(path: &[u8]) -> Option<(&[u8], Vec<u8>, bool)> {
    let name_start = path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let name = &path[name_start..];
    let mut from = 0;
    while let Some(at) = find(&name[from..], b"BURST").map(|i| i + from) {
        let after = at + b"BURST".len();
        let digits = name[after..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let starts = at == 0 || name[at - 1] == b'_';
        if starts && digits >= BURST_DIGITS {
            let token = name[at..after + digits].to_vec();
            let cover = find(&name[after + digits..], b"_COVER").is_some();
            return Some((&path[..name_start], token, cover));
        }
        from = after;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The key of a burst's group in `library_groups`: the folder, a NUL (never in a path, so
/// no file stem can collide with it) and the token.
pub fn burst_key(folder: &[u8], token: &[u8]) -> Vec<u8> {
    let mut k = folder.to_vec();
    k.push(0);
    k.extend_from_slice(token);
    k
}

/// The burst's frames among `siblings` (files of `folder` whose name holds `token`), cover
/// first, then by name; those skipped or failed left out.
pub fn burst_members<'a>(folder: &[u8], token: &[u8], siblings: &'a [Sibling]) -> Vec<&'a Sibling> {
    let mut members: Vec<(bool, &Sibling)> = siblings
        .iter()
        .filter(|s| s.state != "skipped" && s.state != "failed")
        .filter_map(|s| {
            let (f, t, cover) = burst_of(&s.path)?;
            (f == folder && t == token).then_some((!cover, s))
        })
        .collect();
    members.sort_by(|a, b| (a.0, &a.1.path).cmp(&(b.0, &b.1.path)));
    members.into_iter().map(|(_, s)| s).collect()
}

/// The burst stack `file_id` takes part in, as far as the server holds its frames: once the
/// top frame and one more are backed up (it grows as the others arrive, like a RAW stack).
pub fn burst_group(
    file_id: i64,
    folder: &[u8],
    token: &[u8],
    siblings: &[Sibling],
) -> Option<Group> {
    let members = burst_members(folder, token, siblings);
    let involved = members.iter().any(|m| m.file_id == file_id);
    let assets: Vec<String> = members.iter().filter_map(|m| m.asset_id.clone()).collect();
    let top_up = members.first().is_some_and(|m| m.asset_id.is_some());
    (involved && top_up && assets.len() >= 2).then(|| Group {
        kind: "stack".into(),
        stem: burst_key(folder, token),
        assets,
    })
}

/// The Live Photo among these siblings: (still, video).
pub fn live_pair<'a>(prefix: &[u8], siblings: &'a [Sibling]) -> Option<(&'a Sibling, &'a Sibling)> {
    let files = with_ext(prefix, siblings);
    Some((best(&LIVE_STILLS, &files)?, best(&LIVE_VIDEOS, &files)?))
}

/// The stack among these siblings, primary first: every RAW and every JPEG/HEIC, when there
/// is at least one of each.
pub fn stack<'a>(
    prefix: &[u8],
    siblings: &'a [Sibling],
    primary: StackPrimary,
) -> Option<Vec<&'a Sibling>> {
    let files = with_ext(prefix, siblings);
    let mut tops: Vec<(usize, &Sibling)> = files
        .iter()
        .filter_map(|(s, e)| rank(&STACK_TOPS, e).map(|r| (r, *s)))
        .collect();
    let mut raws: Vec<(usize, &Sibling)> = files
        .iter()
        .filter_map(|(s, e)| rank(&RAWS, e).map(|r| (r, *s)))
        .collect();
    if tops.is_empty() || raws.is_empty() {
        return None;
    }
    tops.sort_by(|a, b| (a.0, &a.1.path).cmp(&(b.0, &b.1.path)));
    raws.sort_by(|a, b| (a.0, &a.1.path).cmp(&(b.0, &b.1.path)));
    let (first, second) = match primary {
        StackPrimary::Jpeg => (tops, raws),
        StackPrimary::Raw => (raws, tops),
    };
    Some(first.into_iter().chain(second).map(|(_, s)| s).collect())
}

/// The groups `file_id` takes part in, as far as the server holds their members now: a Live
/// Photo once both halves are backed up; a stack once its primary and one more are (it
/// grows as the others arrive).
pub fn groups_of(
    file_id: i64,
    prefix: &[u8],
    siblings: &[Sibling],
    stacks: Option<StackPrimary>,
) -> Vec<Group> {
    let stem = prefix[..prefix.len() - 1].to_vec();
    let mut out = Vec::new();
    if let Some((still, video)) = live_pair(prefix, siblings) {
        if let (true, Some(s), Some(v)) = (
            still.file_id == file_id || video.file_id == file_id,
            &still.asset_id,
            &video.asset_id,
        ) {
            out.push(Group {
                kind: "live".into(),
                stem: stem.clone(),
                assets: vec![s.clone(), v.clone()],
            });
        }
    }
    if let Some(primary) = stacks {
        if let Some(members) = stack(prefix, siblings, primary) {
            let involved = members.iter().any(|m| m.file_id == file_id);
            let assets: Vec<String> = members.iter().filter_map(|m| m.asset_id.clone()).collect();
            let primary_up = members[0].asset_id.is_some();
            if involved && primary_up && assets.len() >= 2 {
                out.push(Group {
                    kind: "stack".into(),
                    stem,
                    assets,
                });
            }
        }
    }
    out
}

/// Whether this file is the video of a Live Photo (whose still is here too): such a video is
/// hidden by the server, so it joins no album.
pub fn is_live_video(file_id: i64, prefix: &[u8], siblings: &[Sibling]) -> bool {
    live_pair(prefix, siblings).is_some_and(|(_, v)| v.file_id == file_id)
}

/// What a still about to be uploaded does about its Live Photo video.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StillPlan {
    /// Not a Live Photo's still, or its video will not come soon: upload as it is.
    Alone,
    /// The video is on the server: upload with `livePhotoVideoId`.
    WithVideo(String),
    /// The video is still on its way: wait a moment.
    Wait,
}

/// Whether the still `file_id` waits for its video; `waited_ms` is how long it has.
pub fn still_plan(file_id: i64, prefix: &[u8], siblings: &[Sibling], waited_ms: i64) -> StillPlan {
    let Some((still, video)) = live_pair(prefix, siblings) else {
        return StillPlan::Alone;
    };
    if still.file_id != file_id {
        return StillPlan::Alone;
    }
    if let Some(v) = &video.asset_id {
        return StillPlan::WithVideo(v.clone());
    }
    let on_its_way = matches!(
        video.state.as_str(),
        "queued" | "hashing" | "checking" | "uploading" | "verifying" | "retry"
    );
    if on_its_way && waited_ms < PAIR_WAIT_MS {
        StillPlan::Wait
    } else {
        StillPlan::Alone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sib(id: i64, path: &str, asset: Option<&str>, state: &str) -> Sibling {
        Sibling {
            file_id: id,
            path: path.as_bytes().to_vec(),
            asset_id: asset.map(str::to_owned),
            state: state.into(),
        }
    }

    #[test]
    fn stems_split_at_the_last_dot_of_the_name() {
        assert_eq!(
            split_stem(b"/p/a.b/IMG_1.HEIC"),
            Some((&b"/p/a.b/IMG_1."[..], "heic".to_string()))
        );
        assert_eq!(split_stem(b"/p/.hidden"), None);
        assert_eq!(split_stem(b"/p/noext"), None);
        assert_eq!(split_stem(b"/p/trailing."), None);
    }

    /// The camera's HEIC is the still when a converted JPEG sits beside it; a video alone
    /// is no pair.
    #[test]
    fn live_pairs_prefer_heic_and_need_a_video() {
        let p = b"/p/IMG_1.";
        let s = vec![
            sib(1, "/p/IMG_1.JPG", Some("j"), "done"),
            sib(2, "/p/IMG_1.HEIC", Some("h"), "done"),
            sib(3, "/p/IMG_1.MOV", Some("v"), "done"),
            sib(4, "/p/IMG_1.5.MOV", Some("x"), "done"),
        ];
        let (still, video) = live_pair(p, &s).unwrap();
        assert_eq!((still.file_id, video.file_id), (2, 3));
        assert!(live_pair(p, &s[2..3]).is_none());
        let g = groups_of(3, p, &s, None);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].assets, vec!["h".to_string(), "v".to_string()]);
        assert_eq!(g[0].stem, b"/p/IMG_1".to_vec());
        // The JPEG is not part of the pair: sorting it adds no group.
        assert!(groups_of(1, p, &s, None).is_empty());
        assert!(is_live_video(3, p, &s));
    }

    #[test]
    fn stacks_put_the_configured_primary_first_and_wait_for_it() {
        let p = b"/p/DSC_1.";
        let s = vec![
            sib(1, "/p/DSC_1.NEF", Some("r"), "done"),
            sib(2, "/p/DSC_1.JPG", Some("j"), "done"),
        ];
        let g = groups_of(1, p, &s, Some(StackPrimary::Jpeg));
        assert_eq!(g[0].assets, vec!["j".to_string(), "r".to_string()]);
        let g = groups_of(1, p, &s, Some(StackPrimary::Raw));
        assert_eq!(g[0].assets, vec!["r".to_string(), "j".to_string()]);
        assert!(groups_of(1, p, &s, None).is_empty());
        // The primary not backed up yet: no stack with the wrong one on top.
        let waiting = vec![s[0].clone(), sib(2, "/p/DSC_1.JPG", None, "queued")];
        assert!(groups_of(1, p, &waiting, Some(StackPrimary::Jpeg)).is_empty());
    }

    #[test]
    fn a_still_waits_only_for_a_video_on_its_way_and_not_forever() {
        let p = b"/p/IMG_1.";
        let mut s = vec![
            sib(1, "/p/IMG_1.HEIC", None, "uploading"),
            sib(2, "/p/IMG_1.MOV", None, "hashing"),
        ];
        assert_eq!(still_plan(1, p, &s, 0), StillPlan::Wait);
        assert_eq!(still_plan(1, p, &s, PAIR_WAIT_MS), StillPlan::Alone);
        // The video is not the one waiting.
        assert_eq!(still_plan(2, p, &s, 0), StillPlan::Alone);
        s[1] = sib(2, "/p/IMG_1.MOV", Some("v"), "done");
        assert_eq!(still_plan(1, p, &s, 0), StillPlan::WithVideo("v".into()));
        s[1] = sib(2, "/p/IMG_1.MOV", None, "failed");
        assert_eq!(still_plan(1, p, &s, 0), StillPlan::Alone);
    }
}

#[cfg(test)]
mod burst_tests {
    use super::*;

    fn sib(id: i64, path: &str, asset: Option<&str>) -> Sibling {
        Sibling {
            file_id: id,
            path: path.as_bytes().to_vec(),
            asset_id: asset.map(str::to_owned),
            state: if asset.is_some() { "done" } else { "queued" }.into(),
        }
    }

    #[test]
    fn burst_names_are_read_by_their_token() {
        let (folder, token, cover) =
            burst_of(b"/p/2024/IMG_20240501_123456_BURST20240501123456_COVER.jpg").unwrap();
        assert_eq!(
            (folder, token.as_slice(), cover),
            (&b"/p/2024/"[..], &b"BURST20240501123456"[..], true)
        );
        let (_, t2, c2) = burst_of(b"/p/2024/00001IMG_00001_BURST20240501123456.jpg").unwrap();
        assert_eq!((t2, c2), (token, false));
        for no in [
            "/p/IMG_1234.jpg",
            "/p/BURST123.jpg",                // too few digits
            "/p/MYBURST20240501123.jpg",      // not at a word start
            "/p/BURST20240501/IMG_1.jpg",     // a folder's name, not the file's
            "/p/IMG_burst20240501123456.jpg", // lower case
        ] {
            assert!(burst_of(no.as_bytes()).is_none(), "{no}");
        }
    }

    #[test]
    fn a_burst_is_stacked_with_its_cover_on_top_once_two_frames_are_up() {
        let f = b"/p/";
        let t = b"BURST20240501123456";
        let frames = [
            sib(1, "/p/IMG_1_BURST20240501123456.jpg", Some("a1")),
            sib(2, "/p/IMG_2_BURST20240501123456_COVER.jpg", None),
            sib(3, "/p/IMG_3_BURST20240501123456.jpg", Some("a3")),
            sib(4, "/p/IMG_4_BURST20240509999999.jpg", Some("other")),
        ];
        // The cover is not up yet: no stack (its top would change later).
        assert_eq!(burst_group(1, f, t, &frames), None);
        let mut frames = frames.to_vec();
        frames[1] = sib(2, "/p/IMG_2_BURST20240501123456_COVER.jpg", Some("a2"));
        let g = burst_group(3, f, t, &frames).unwrap();
        assert_eq!(g.assets, ["a2", "a1", "a3"]);
        assert_eq!(g.kind, "stack");
        assert_eq!(g.stem, burst_key(f, t));
        assert_eq!(burst_group(4, f, t, &frames), None, "another burst's frame");
    }
}
