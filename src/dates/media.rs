//! The capture time written inside a media file, read from a bounded part of it: EXIF
//! `DateTimeOriginal` (else `CreateDate`) with its `OffsetTime…` and sub-seconds, from a
//! JPEG's APP1 segment, a TIFF-based raw file, or the `Exif` item of a HEIF/HEIC; and the
//! QuickTime creation date of a movie (`com.apple.quicktime.creationdate` in
//! `moov/meta`, with its offset), else the creation time of its movie header (`moov/mvhd`,
//! UTC by definition).
//!
//! Hand-written on purpose (docs/ARCHITECTURE.md#dates): the crates that read all of these
//! bring a date library, a parser combinator crate in two versions and a regex engine.
//!
//! Must not: read more than [`READ_MAX`] bytes of a file in all, allocate in proportion to
//! a length the file claims beyond that, loop without progress, or panic on any input.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::{exif_time, Stated};

/// Bytes read from one file at most (a JPEG's EXIF sits in its first 64 KiB; a HEIF's
/// `meta` box and its EXIF item, or a movie's box headers, are far smaller).
pub const READ_MAX: u64 = 1 << 20;
/// Boxes looked at in one file, at most.
const BOXES_MAX: usize = 256;
/// Seconds from 1904-01-01 (the QuickTime epoch) to 1970-01-01.
const QT_EPOCH: i64 = 2_082_844_800;

/// Blocking: the capture time stated in the file at `path`, if it has one it can be read.
pub fn capture_time(path: &Path) -> Option<Stated> {
    capture_time_in(&mut File::open(path).ok()?)
}

/// The capture time stated in `content`, a whole file already read (a small upload's body,
/// docs/ARCHITECTURE.md#upload): the same answer as [`capture_time`] of a file holding it.
pub fn capture_time_of(content: &[u8]) -> Option<Stated> {
    capture_time_in(&mut std::io::Cursor::new(content))
}

fn capture_time_in(source: &mut dyn ReadSeek) -> Option<Stated> {
    let mut f = Budget {
        source,
        left: READ_MAX,
    };
    let head = f.read_at(0, 16)?;
    if head.starts_with(&[0xFF, 0xD8]) {
        jpeg(&mut f)
    } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        let tiff = f.read_at(0, 256 * 1024)?;
        tiff_dates(&tiff)
    } else if head.get(4..8) == Some(b"ftyp") {
        bmff(&mut f)
    } else {
        None
    }
}

/// What a media file is read from: the file, or its bytes in memory.
trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// A source with a byte budget: every read counts against [`READ_MAX`].
struct Budget<'a> {
    source: &'a mut dyn ReadSeek,
    left: u64,
}

impl Budget<'_> {
    /// Up to `len` bytes at `at` (fewer at the end of the file); `None` once over budget.
    fn read_at(&mut self, at: u64, len: u64) -> Option<Vec<u8>> {
        let len = len.min(self.left);
        if len == 0 {
            return None;
        }
        self.source.seek(SeekFrom::Start(at)).ok()?;
        let mut buf = Vec::with_capacity(len as usize);
        (&mut self.source).take(len).read_to_end(&mut buf).ok()?;
        self.left -= len;
        Some(buf)
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The APP1 `Exif` segment before the image data.
fn jpeg(f: &mut Budget) -> Option<Stated> {
    let head = f.read_at(0, 128 * 1024)?;
    let mut at = 2;
    loop {
        if *head.get(at)? != 0xFF {
            return None;
        }
        let marker = *head.get(at + 1)?;
        match marker {
            0xFF => {
                at += 1;
                continue;
            }
            0xD0..=0xD7 | 0x01 => {
                at += 2;
                continue;
            }
            // Start of scan, end of image: no EXIF before the image data.
            0xDA | 0xD9 => return None,
            _ => {}
        }
        let len = usize::from(be16(&head, at + 2)?);
        if len < 2 {
            return None;
        }
        let body = head.get(at + 4..at + 2 + len)?;
        if marker == 0xE1 && body.starts_with(b"Exif\0\0") {
            return tiff_dates(&body[6..]);
        }
        at += 2 + len;
    }
}

/// A TIFF structure (EXIF's): the byte order, IFD0, its EXIF IFD.
fn tiff_dates(t: &[u8]) -> Option<Stated> {
    let le = match t.get(0..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = t.get(at..at + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = t.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    // (tag, type, count, value-or-offset field position) of each entry of the IFD at `at`.
    let entries = |at: usize| -> Vec<(u16, u16, u32, usize)> {
        let n = u16_at(at).unwrap_or(0) as usize;
        (0..n.min(512))
            .filter_map(|i| {
                let e = at + 2 + 12 * i;
                Some((u16_at(e)?, u16_at(e + 2)?, u32_at(e + 4)?, e + 8))
            })
            .collect()
    };
    // An ASCII value: inline when it fits in four bytes.
    let ascii = |(_, typ, count, field): (u16, u16, u32, usize)| -> Option<String> {
        if typ != 2 || count == 0 || count > 64 {
            return None;
        }
        let at = if count <= 4 {
            field
        } else {
            u32_at(field)? as usize
        };
        let raw = t.get(at..at + count as usize)?;
        Some(String::from_utf8_lossy(raw).into_owned())
    };
    let ifd0 = entries(u32_at(4)? as usize);
    let exif_at = ifd0
        .iter()
        .find(|e| e.0 == 0x8769)
        .and_then(|e| u32_at(e.3))? as usize;
    let exif = entries(exif_at);
    let tag = |id: u16| exif.iter().copied().find(|e| e.0 == id).and_then(ascii);
    // DateTimeOriginal with OffsetTimeOriginal and SubSecTimeOriginal; else CreateDate
    // (DateTimeDigitized) with its own.
    [(0x9003, 0x9011, 0x9291), (0x9004, 0x9012, 0x9292)]
        .into_iter()
        .find_map(|(dt, off, sub)| exif_time(&tag(dt)?, tag(sub).as_deref(), tag(off).as_deref()))
}

/// One box header: (type, start of its body, end of the box).
fn box_at(f: &mut Budget, at: u64, end: u64) -> Option<([u8; 4], u64, u64)> {
    let h = f.read_at(at, 16)?;
    let size32 = be32(&h, 0)?;
    let kind: [u8; 4] = h.get(4..8)?.try_into().ok()?;
    let (body, size) = match size32 {
        1 => (at + 16, be64(&h, 8)?),
        0 => (at + 8, end - at),
        n => (at + 8, u64::from(n)),
    };
    if size < body - at || at.checked_add(size)? > end {
        return None;
    }
    Some((kind, body, at + size))
}

/// An ISO-BMFF file (HEIF/HEIC, MP4, QuickTime): `meta` (HEIF's EXIF item) or `moov/mvhd`.
fn bmff(f: &mut Budget) -> Option<Stated> {
    let end = f.source.seek(SeekFrom::End(0)).ok()?;
    let mut at = 0;
    for _ in 0..BOXES_MAX {
        if at >= end {
            return None;
        }
        let (kind, body, next) = box_at(f, at, end)?;
        match &kind {
            b"meta" => {
                if let Some(s) = heif_exif(f, body, next) {
                    return Some(s);
                }
            }
            b"moov" => return mvhd(f, body, next),
            _ => {}
        }
        at = next;
    }
    None
}

/// A movie's capture time: the QuickTime `com.apple.quicktime.creationdate` of `moov/meta`
/// (an ISO 8601 time with the camera's offset, written by iPhones and many Android phones)
/// when the file has one, else the creation time of `moov/mvhd` (UTC; zero, unset, counts
/// as none). The movie header is often the time the file was written (an export, a
/// transcode), the QuickTime key the time it was shot.
fn mvhd(f: &mut Budget, mut at: u64, end: u64) -> Option<Stated> {
    let mut header = None;
    for _ in 0..BOXES_MAX {
        if at >= end {
            break;
        }
        let Some((kind, body, next)) = box_at(f, at, end) else {
            break;
        };
        match &kind {
            b"mvhd" => header = movie_header_time(f, body),
            b"meta" => {
                if let Some(s) = quicktime_creation_date(f, body, next) {
                    return Some(s);
                }
            }
            _ => {}
        }
        at = next;
    }
    header
}

fn movie_header_time(f: &mut Budget, body: u64) -> Option<Stated> {
    let b = f.read_at(body, 12)?;
    let secs = match b.first()? {
        0 => u64::from(be32(&b, 4)?),
        1 => be64(&b, 4)?,
        _ => return None,
    };
    let unix = i64::try_from(secs).ok()?.checked_sub(QT_EPOCH)?;
    if secs == 0 || unix <= 0 {
        return None;
    }
    jiff::Timestamp::from_second(unix).ok().map(Stated::Instant)
}

/// The key QuickTime metadata names a capture time with.
const QT_CREATION_DATE: &[u8] = b"com.apple.quicktime.creationdate";
/// A QuickTime `meta` box read at most this far.
const QT_META_MAX: u64 = 64 * 1024;

/// `moov/meta` in QuickTime's form: `hdlr` (`mdta`), `keys` (the key names, numbered from 1)
/// and `ilst` (one box per key number, holding a `data` box). The value of
/// [`QT_CREATION_DATE`], when it is UTF-8 text that parses.
fn quicktime_creation_date(f: &mut Budget, body: u64, end: u64) -> Option<Stated> {
    let meta = f.read_at(body, (end - body).min(QT_META_MAX))?;
    // QuickTime writes `meta` as a plain box; ISO-BMFF as a full box (version and flags
    // first). Which one it is shows in where the first child's type lies.
    let start = if meta.get(4..8) == Some(b"hdlr") {
        0
    } else {
        4
    };
    let (mut keys, mut ilst) = (None, None);
    let mut at = start;
    for _ in 0..BOXES_MAX {
        let Some((kind, child)) = child_box(&meta, at) else {
            break;
        };
        match kind {
            b"keys" => keys = Some(child),
            b"ilst" => ilst = Some(child),
            _ => {}
        }
        at += 8 + child.len();
    }
    let index = key_index(keys?)?;
    let mut at = 0;
    let ilst = ilst?;
    for _ in 0..BOXES_MAX {
        let (kind, item) = child_box(ilst, at)?;
        at += 8 + item.len();
        if u32::from_be_bytes(kind.try_into().ok()?) != index {
            continue;
        }
        let (data_kind, data) = child_box(item, 0)?;
        // `data`: a type (1 = UTF-8) and a locale, then the value.
        if data_kind != b"data" || be32(data, 0)? != 1 {
            return None;
        }
        let text = std::str::from_utf8(data.get(8..)?).ok()?;
        return quicktime_time(text.trim_end_matches('\0').trim());
    }
    None
}

/// The child box at `at` of an in-memory box body: its type and body (32-bit sizes only,
/// as QuickTime metadata uses).
fn child_box(b: &[u8], at: usize) -> Option<(&[u8], &[u8])> {
    let size = usize::try_from(be32(b, at)?).ok()?;
    let kind = b.get(at + 4..at + 8)?;
    let body = b.get(at + 8..at.checked_add(size)?)?;
    Some((kind, body))
}

/// The 1-based number of [`QT_CREATION_DATE`] in a `keys` box (a full box: version and
/// flags, a count, then per key its size, namespace and name).
fn key_index(keys: &[u8]) -> Option<u32> {
    let count = be32(keys, 4)?;
    let mut at = 8usize;
    for i in 1..=count.min(BOXES_MAX as u32) {
        let size = usize::try_from(be32(keys, at)?).ok()?;
        if size < 8 {
            return None;
        }
        if keys.get(at + 8..at.checked_add(size)?)? == QT_CREATION_DATE {
            return Some(i);
        }
        at += size;
    }
    None
}

/// `2024-05-01T12:34:56+0200` (also `+02:00`, `Z`, fractions of a second): an instant; the
/// same without an offset: a local time.
fn quicktime_time(s: &str) -> Option<Stated> {
    let b = s.as_bytes();
    // `+HHMM` at the end: jiff wants `+HH:MM`.
    let normalised = match b.len().checked_sub(5).map(|i| (i, &b[i..])) {
        Some((i, [sign, h1, h2, m1, m2]))
            if matches!(sign, b'+' | b'-')
                && [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()) =>
        {
            format!("{}:{}", &s[..i + 3], &s[i + 3..])
        }
        _ => s.to_owned(),
    };
    if let Ok(t) = normalised.parse::<jiff::Timestamp>() {
        return Some(Stated::Instant(t));
    }
    normalised
        .parse::<jiff::civil::DateTime>()
        .ok()
        .map(Stated::Local)
}

/// HEIF: the item of type `Exif` in `iinf`, its extent in `iloc`, then the TIFF it holds
/// (after a 4-byte offset to the TIFF header).
fn heif_exif(f: &mut Budget, body: u64, end: u64) -> Option<Stated> {
    let meta = f.read_at(body, (end - body).min(256 * 1024))?;
    // `meta` is a full box: version and flags first.
    let mut at = 4;
    let (mut exif_id, mut iloc) = (None, None);
    for _ in 0..BOXES_MAX {
        if at + 8 > meta.len() {
            break;
        }
        let size = be32(&meta, at)? as usize;
        let kind = meta.get(at + 4..at + 8)?;
        if size < 8 || at + size > meta.len() {
            break;
        }
        let b = &meta[at + 8..at + size];
        match kind {
            b"iinf" => exif_id = iinf_exif(b),
            b"iloc" => iloc = Some(b),
            _ => {}
        }
        at += size;
    }
    let (offset, len) = iloc_extent(iloc?, exif_id?)?;
    let item = f.read_at(offset, len.min(256 * 1024))?;
    let skip = be32(&item, 0)? as usize;
    let tiff = item.get(4 + skip..)?;
    tiff_dates(tiff)
}

/// The id of the first `Exif` item in an `iinf` body.
fn iinf_exif(b: &[u8]) -> Option<u32> {
    let version = *b.first()?;
    let (count, mut at) = if version == 0 {
        (u32::from(be16(b, 4)?), 6)
    } else {
        (be32(b, 4)?, 8)
    };
    for _ in 0..count.min(4096) {
        let size = be32(b, at)? as usize;
        if size < 8 || b.get(at + 4..at + 8)? != b"infe" {
            return None;
        }
        let e = b.get(at + 8..at + size)?;
        let v = *e.first()?;
        let (id, kind) = match v {
            2 => (u32::from(be16(e, 4)?), e.get(8..12)?),
            3 => (be32(e, 4)?, e.get(10..14)?),
            _ => (0, &b"none"[..]),
        };
        if kind == b"Exif" {
            return Some(id);
        }
        at += size;
    }
    None
}

/// The (file offset, length) of item `id`'s first extent in an `iloc` body (construction
/// method 0, file offsets, only).
fn iloc_extent(b: &[u8], id: u32) -> Option<(u64, u64)> {
    let version = *b.first()?;
    let sizes = be16(b, 4)?;
    let (off_size, len_size, base_size) = (
        usize::from(sizes >> 12),
        usize::from((sizes >> 8) & 0xF),
        usize::from((sizes >> 4) & 0xF),
    );
    let index_size = if version >= 1 {
        usize::from(sizes & 0xF)
    } else {
        0
    };
    let uint = |at: usize, n: usize| -> Option<u64> {
        match n {
            0 => Some(0),
            4 => be32(b, at).map(u64::from),
            8 => be64(b, at),
            _ => None,
        }
    };
    let (count, mut at) = if version < 2 {
        (u32::from(be16(b, 6)?), 8)
    } else {
        (be32(b, 6)?, 10)
    };
    for _ in 0..count.min(4096) {
        let item = if version < 2 {
            let v = u32::from(be16(b, at)?);
            at += 2;
            v
        } else {
            let v = be32(b, at)?;
            at += 4;
            v
        };
        let method = if version >= 1 {
            let m = be16(b, at)? & 0xF;
            at += 2;
            m
        } else {
            0
        };
        at += 2; // data_reference_index
        let base = uint(at, base_size)?;
        at += base_size;
        let extents = be16(b, at)?;
        at += 2;
        let mut first = None;
        for _ in 0..extents {
            at += index_size;
            let off = uint(at, off_size)?;
            at += off_size;
            let len = uint(at, len_size)?;
            at += len_size;
            first.get_or_insert((base.checked_add(off)?, len));
        }
        if item == id {
            return (method == 0).then_some(first).flatten();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn a_movie_header_creation_time_is_utc() {
        let secs = (1_714_566_896 + QT_EPOCH) as u32;
        let mut mvhd = vec![0, 0, 0, 0];
        mvhd.extend_from_slice(&secs.to_be_bytes());
        mvhd.extend_from_slice(&[0; 92]);
        let mut file = bx(b"ftyp", b"isom\0\0\x02\0isom");
        file.extend(bx(b"mdat", &[7; 4000]));
        file.extend(bx(b"moov", &bx(b"mvhd", &mvhd)));
        let f = write(&file);
        assert_eq!(
            capture_time(f.path()),
            Some(Stated::Instant(
                jiff::Timestamp::from_second(1_714_566_896).unwrap()
            ))
        );
        // Unset (0) is no date.
        let mut zero = bx(b"ftyp", b"isom\0\0\x02\0isom");
        zero.extend(bx(b"moov", &bx(b"mvhd", &[0; 100])));
        assert_eq!(capture_time(write(&zero).path()), None);
    }

    /// A QuickTime `moov/meta` with `hdlr`, `keys` and `ilst`, holding `date` under the
    /// creation-date key (second of two keys, as phones write a make first).
    fn qt_meta(date: &str, full_box: bool) -> Vec<u8> {
        let mut keys = vec![0, 0, 0, 0, 0, 0, 0, 2];
        for k in [&b"com.apple.quicktime.make"[..], QT_CREATION_DATE] {
            keys.extend_from_slice(&((k.len() + 8) as u32).to_be_bytes());
            keys.extend_from_slice(b"mdta");
            keys.extend_from_slice(k);
        }
        let data = |v: &[u8]| {
            let mut d = vec![0, 0, 0, 1, 0, 0, 0, 0];
            d.extend_from_slice(v);
            bx(b"data", &d)
        };
        let mut ilst = bx(&1u32.to_be_bytes(), &data(b"Apple"));
        ilst.extend(bx(&2u32.to_be_bytes(), &data(date.as_bytes())));
        let mut hdlr = vec![0; 8];
        hdlr.extend_from_slice(b"mdta");
        hdlr.extend_from_slice(&[0; 13]);
        let mut meta = if full_box { vec![0; 4] } else { Vec::new() };
        meta.extend(bx(b"hdlr", &hdlr));
        meta.extend(bx(b"keys", &keys));
        meta.extend(bx(b"ilst", &ilst));
        bx(b"meta", &meta)
    }

    fn movie(header_secs: i64, meta: Option<Vec<u8>>) -> Vec<u8> {
        let mut mvhd = vec![0, 0, 0, 0];
        mvhd.extend_from_slice(&((header_secs + QT_EPOCH) as u32).to_be_bytes());
        mvhd.extend_from_slice(&[0; 92]);
        let mut moov = bx(b"mvhd", &mvhd);
        moov.extend(bx(b"trak", &[0; 64]));
        moov.extend(meta.unwrap_or_default());
        let mut file = bx(b"ftyp", b"qt  \0\0\x02\0qt  ");
        file.extend(bx(b"mdat", &[7; 4000]));
        file.extend(bx(b"moov", &moov));
        file
    }

    /// The QuickTime creation date, with its offset, wins over the movie header (here the
    /// time of a later export); without an offset it is a local time; without the key the
    /// header stands.
    #[test]
    fn the_quicktime_creation_date_is_preferred_over_the_movie_header() {
        let shot = jiff::Timestamp::from_second(1_714_559_696).unwrap(); // 10:34:56Z
        let exported = 1_720_000_000;
        for (date, full) in [
            ("2024-05-01T12:34:56+0200", false),
            ("2024-05-01T12:34:56+02:00", true),
            ("2024-05-01T10:34:56Z", false),
        ] {
            let f = write(&movie(exported, Some(qt_meta(date, full))));
            assert_eq!(
                capture_time(f.path()),
                Some(Stated::Instant(shot)),
                "{date}"
            );
        }
        let f = write(&movie(
            exported,
            Some(qt_meta("2024-05-01T12:34:56", false)),
        ));
        assert_eq!(
            capture_time(f.path()),
            Some(Stated::Local("2024-05-01T12:34:56".parse().unwrap()))
        );
        let header = Some(Stated::Instant(
            jiff::Timestamp::from_second(exported).unwrap(),
        ));
        assert_eq!(capture_time(write(&movie(exported, None)).path()), header);
        // A value that is no date leaves the header.
        let f = write(&movie(exported, Some(qt_meta("yesterday", false))));
        assert_eq!(capture_time(f.path()), header);
        // A cut-short meta box (its size claims more than is there) is no date, no panic.
        let mut cut = movie(exported, Some(qt_meta("2024-05-01T12:34:56Z", false)));
        cut.truncate(cut.len() - 20);
        let _ = capture_time(write(&cut).path());
    }

    #[test]
    fn garbage_and_truncated_files_have_no_date() {
        for bytes in [
            &b""[..],
            &[0xFF, 0xD8],
            &[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF, b'E', b'x'],
            b"\0\0\0\x08ftyp",
            b"\0\0\0\x01ftyp\xff\xff\xff\xff\xff\xff\xff\xff",
            b"II*\0\x08\0\0\0\xff\xff",
            b"MM\0*\xff\xff\xff\xff",
        ] {
            assert_eq!(capture_time(write(bytes).path()), None, "{bytes:?}");
        }
    }
}
