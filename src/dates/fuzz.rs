//! Property tests of the date readers (issue 13, fuzzing): EXIF date strings, offsets and
//! sub-seconds of any text; files of arbitrary bytes behind a JPEG, TIFF or ISO-BMFF
//! header; any file name and mtime. Nothing panics, and a well-formed EXIF time reads back.
//!
//! A short run by default (proptest's 256 cases); a longer one with
//! `PROPTEST_CASES=20000 cargo test --lib dates::fuzz`.

use std::io::Write;

use jiff::civil::date;
use proptest::prelude::*;

use super::*;

fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    f.write_all(bytes).expect("write");
    f
}

/// A header the readers recognise, then anything: often numbers that look like sizes and
/// offsets (big and little endian), `Exif`, box names.
fn media_bytes() -> impl Strategy<Value = Vec<u8>> {
    let head = prop::sample::select(vec![
        &b"\xFF\xD8"[..],
        b"\xFF\xD8\xFF\xE1",
        b"II*\0\x08\0\0\0",
        b"MM\0*\0\0\0\x08",
        b"\0\0\0\x18ftypheic",
        b"\0\0\0\x01ftypisom",
        b"\0\0\0\0ftypqt  ",
    ]);
    let piece = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..16),
        any::<u32>().prop_map(|n| n.to_be_bytes().to_vec()),
        any::<u32>().prop_map(|n| n.to_le_bytes().to_vec()),
        (0u32..64).prop_map(|n| n.to_be_bytes().to_vec()),
        prop::sample::select(vec![
            &b"Exif\0\0"[..],
            b"II*\0",
            b"MM\0*",
            b"meta",
            b"moov",
            b"mvhd",
            b"iinf",
            b"infe",
            b"iloc",
            b"\x87\x69",
            b"\x90\x03",
            b"\0\x02",
            b"\xFF\xDA",
            b"\xFF\xD9",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    (head, prop::collection::vec(piece, 0..40)).prop_map(|(h, pieces)| {
        let mut v = h.to_vec();
        for p in pieces {
            v.extend(p);
        }
        v
    })
}

proptest! {
    #[test]
    fn any_exif_strings_are_read_without_panicking(
        dt in prop_oneof![
            "\\PC{0,24}",
            "[0-9: \0]{19,22}",
            "[0-9]{4}:[0-9]{2}:[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\0?",
        ],
        sub in proptest::option::of(prop_oneof!["\\PC{0,12}", "[0-9]{0,12}\0?"]),
        off in proptest::option::of(prop_oneof!["\\PC{0,8}", "[+-][0-9]{2}:[0-9]{2}", Just("Z".to_owned())]),
    ) {
        if let Some(s) = exif_time(&dt, sub.as_deref(), off.as_deref()) {
            let _ = s.instant(&TimeZone::UTC);
        }
    }

    #[test]
    fn a_well_formed_exif_time_reads_back(
        y in 1i16..=9999, mo in 1i8..=12, d in 1i8..=28, h in 0i8..=23, mi in 0i8..=59, s in 0i8..=59,
        sub in "[0-9]{1,9}", oh in 0i32..=14, om in 0i32..=59, sign in any::<bool>(),
    ) {
        let text = format!("{y:04}:{mo:02}:{d:02} {h:02}:{mi:02}:{s:02}");
        let local = exif_time(&text, Some(&sub), None);
        let ns = sub.parse::<i32>().unwrap() * 10i32.pow(9 - sub.len() as u32);
        prop_assert_eq!(local, Some(Stated::Local(date(y, mo, d).at(h, mi, s, ns))));
        let offset = format!("{}{oh:02}:{om:02}", if sign { '+' } else { '-' });
        let secs = (oh * 3600 + om * 60) * if sign { 1 } else { -1 };
        let tz = jiff::tz::Offset::from_seconds(secs).unwrap();
        let want = tz.to_timestamp(date(y, mo, d).at(h, mi, s, ns)).ok().map(Stated::Instant);
        prop_assert_eq!(exif_time(&text, Some(&sub), Some(&offset)), want);
    }

    #[test]
    fn any_media_file_is_read_without_panicking(bytes in media_bytes()) {
        let f = file_with(&bytes);
        let stated = media::capture_time(f.path());
        // A small upload's date is read from the bytes it sends: the same answer.
        prop_assert_eq!(media::capture_time_of(&bytes), stated);
        let dating = Dating { from_names: true, timezone: TimeZone::UTC };
        let (ns, source) = created_at(f.path(), 7, &dating);
        prop_assert_eq!(created_at_with(f.path(), Some(&bytes), 7, &dating), (ns, source));
        prop_assert_ne!(source, DateSource::Name, "a temp file's name holds no date");
    }

    #[test]
    fn any_bytes_are_read_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let f = file_with(&bytes);
        prop_assert_eq!(media::capture_time_of(&bytes), media::capture_time(f.path()));
    }

    #[test]
    fn any_name_and_mtime_give_a_date(name in "\\PC{0,40}", mtime in any::<i64>()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let clean: String = name.chars().filter(|c| *c != '/' && *c != '\0').collect();
        let path = dir.path().join(if clean.is_empty() || clean == "." || clean == ".." { "x".to_owned() } else { clean });
        std::fs::write(&path, b"not media").expect("write");
        let dating = Dating { from_names: true, timezone: TimeZone::UTC };
        let (ns, source) = created_at(&path, mtime, &dating);
        if source == DateSource::Mtime {
            prop_assert_eq!(ns, mtime);
        }
    }
}
