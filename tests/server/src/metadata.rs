//! The metadata job: what Immich's metadata extraction derives from an upload that a backup
//! client can observe (docs/SERVER-API.md#dates, docs/SERVER-API.md#sidecars). The capture
//! date from EXIF `DateTimeOriginal` (or `DateTimeDigitized`) with its `OffsetTime*` and
//! sub-seconds, or from an XMP sidecar's `exif:DateTimeOriginal` / `xmp:CreateDate`; the
//! dimensions (JPEG frame header, PNG header, else EXIF pixel dimensions); make, model, lens,
//! orientation, exposure; the description (EXIF `ImageDescription`, else the sidecar's
//! `dc:description`).
//!
//! This module only reads bytes and returns an [`Extracted`]; `assets::apply_metadata` writes it
//! into the asset when the job runs. It must not touch the state, and it never fails: a file it
//! cannot read simply has no metadata, as an image exiftool cannot parse has none on the real
//! server. Thumbnails, thumbhash, GPS, faces and video probing are not modelled.
//!
//! EXIF is read with `kamadak-exif`; the daemon uses a different crate, so the test server and
//! the client cannot agree by construction on a misreading.

use std::io::Cursor;

use exif::{In, Tag, Value};
use time::{Date, Month, PrimitiveDateTime, Time};

/// How much of an upload's start is kept for extraction when the bytes themselves are not kept.
/// EXIF sits in the first segments of a JPEG (APP1 is limited to 64 KiB) and the frame header
/// follows, so this covers every photo a backup test sends.
pub(crate) const HEAD_BYTES: usize = 512 * 1024;

/// A sidecar larger than this is not kept (XMP sidecars are a few KiB).
pub(crate) const MAX_SIDECAR: usize = 1024 * 1024;

const NS_DC: &str = "http://purl.org/dc/elements/1.1/";
const NS_EXIF: &str = "http://ns.adobe.com/exif/1.0/";
const NS_XMP: &str = "http://ns.adobe.com/xap/1.0/";
const NS_RDF: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#";
const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// A capture date read from the file or its sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CaptureDate {
    /// The instant. Without an offset the wall time is taken as UTC, like a server whose
    /// process runs in UTC (the Docker default).
    pub utc_ms: i64,
    /// The wall-clock time, stored as if it were UTC (Immich's `localDateTime`).
    pub local_ms: i64,
    /// Minutes east of UTC, when the file said.
    pub offset_min: Option<i32>,
}

impl CaptureDate {
    /// exiftool-vendored's zone name for a fixed offset: `UTC+2`, `UTC-5:30`, `UTC+0`.
    pub fn time_zone(&self) -> Option<String> {
        let off = self.offset_min?;
        let sign = if off < 0 { '-' } else { '+' };
        let (h, m) = (off.abs() / 60, off.abs() % 60);
        Some(if m == 0 {
            format!("UTC{sign}{h}")
        } else {
            format!("UTC{sign}{h}:{m:02}")
        })
    }
}

/// What the metadata job found. Empty (`Default`) for a file without metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Extracted {
    pub date: Option<CaptureDate>,
    pub make: Option<String>,
    pub model: Option<String>,
    pub lens_model: Option<String>,
    pub orientation: Option<u32>,
    /// Pixel dimensions as stored (before orientation).
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// `ImageDescription || Description`, trimmed, as Immich computes it.
    pub description: String,
    pub f_number: Option<f64>,
    pub focal_length: Option<f64>,
    pub iso: Option<u32>,
    pub exposure_time: Option<String>,
}

/// Reads what Immich's metadata job would read from the file's first bytes (`head`) and an
/// optional XMP sidecar. Dates in the sidecar win over the file's, as in Immich's
/// `mergeExifTags`.
pub(crate) fn extract(head: &[u8], sidecar: Option<&[u8]>) -> Extracted {
    let mut out = Extracted::default();
    let mut image_description = None;
    if let Ok(exif) = exif::Reader::new().read_from_container(&mut Cursor::new(head)) {
        out.date = exif_date(&exif);
        out.make = ascii(&exif, Tag::Make);
        out.model = ascii(&exif, Tag::Model);
        out.lens_model = ascii(&exif, Tag::LensModel);
        out.orientation = uint(&exif, Tag::Orientation);
        out.width = uint(&exif, Tag::PixelXDimension).or_else(|| uint(&exif, Tag::ImageWidth));
        out.height = uint(&exif, Tag::PixelYDimension).or_else(|| uint(&exif, Tag::ImageLength));
        out.f_number = rational(&exif, Tag::FNumber);
        out.focal_length = rational(&exif, Tag::FocalLength);
        out.iso = uint(&exif, Tag::PhotographicSensitivity);
        out.exposure_time = exposure(&exif);
        image_description = ascii_raw(&exif, Tag::ImageDescription);
    }
    // exiftool reports the frame's size as ImageWidth/ImageHeight, ahead of the EXIF copy.
    if let Some((w, h)) = jpeg_size(head).or_else(|| png_size(head)) {
        out.width = Some(w);
        out.height = Some(h);
    }
    let xmp = sidecar.map(read_xmp).unwrap_or_default();
    if xmp.date.is_some() {
        out.date = xmp.date;
    }
    // `String(ImageDescription || Description || '').trim()`: a present but blank EXIF
    // description (cameras write spaces) still hides the sidecar's.
    out.description = match image_description.filter(|d| !d.is_empty()) {
        Some(d) => d.trim().to_string(),
        None => xmp.description.unwrap_or_default().trim().to_string(),
    };
    out
}

// ---------------------------------------------------------------------------------------------
// EXIF

fn field(exif: &exif::Exif, tag: Tag) -> Option<&exif::Field> {
    exif.get_field(tag, In::PRIMARY)
}

fn ascii_bytes(exif: &exif::Exif, tag: Tag) -> Option<Vec<u8>> {
    match &field(exif, tag)?.value {
        Value::Ascii(parts) => parts.first().cloned(),
        _ => None,
    }
}

/// The raw text (untrimmed), for `ImageDescription`'s truthiness rule.
fn ascii_raw(exif: &exif::Exif, tag: Tag) -> Option<String> {
    ascii_bytes(exif, tag).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A trimmed, non-empty text value.
fn ascii(exif: &exif::Exif, tag: Tag) -> Option<String> {
    ascii_raw(exif, tag)
        .map(|s| {
            s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string()
        })
        .filter(|s| !s.is_empty())
}

fn uint(exif: &exif::Exif, tag: Tag) -> Option<u32> {
    field(exif, tag)?.value.get_uint(0)
}

fn rational(exif: &exif::Exif, tag: Tag) -> Option<f64> {
    match &field(exif, tag)?.value {
        Value::Rational(v) => v
            .first()
            .filter(|r| r.denom != 0)
            .map(|r| f64::from(r.num) / f64::from(r.denom)),
        _ => None,
    }
}

/// exiftool's print form: `1/125` below a second, else seconds.
fn exposure(exif: &exif::Exif) -> Option<String> {
    match &field(exif, Tag::ExposureTime)?.value {
        Value::Rational(v) => {
            let r = v.first().filter(|r| r.denom != 0 && r.num != 0)?;
            if r.num < r.denom {
                Some(format!(
                    "1/{}",
                    (f64::from(r.denom) / f64::from(r.num)).round()
                ))
            } else {
                Some(format!("{}", f64::from(r.num) / f64::from(r.denom)))
            }
        }
        _ => None,
    }
}

/// `DateTimeOriginal` (else `DateTimeDigitized`, exiftool's `CreateDate`) with its sub-seconds
/// and offset; `OffsetTime` stands in for a missing specific offset.
fn exif_date(exif: &exif::Exif) -> Option<CaptureDate> {
    let candidates = [
        (
            Tag::DateTimeOriginal,
            Tag::SubSecTimeOriginal,
            Tag::OffsetTimeOriginal,
        ),
        (
            Tag::DateTimeDigitized,
            Tag::SubSecTimeDigitized,
            Tag::OffsetTimeDigitized,
        ),
    ];
    for (date_tag, subsec_tag, offset_tag) in candidates {
        let Some(raw) = ascii_bytes(exif, date_tag) else {
            continue;
        };
        let Ok(mut dt) = exif::DateTime::from_ascii(&raw) else {
            continue;
        };
        if let Some(sub) = ascii_bytes(exif, subsec_tag) {
            let _ = dt.parse_subsec(&sub);
        }
        let offset = ascii_bytes(exif, offset_tag).or_else(|| ascii_bytes(exif, Tag::OffsetTime));
        if let Some(off) = offset {
            let _ = dt.parse_offset(&off);
        }
        let millis = dt.nanosecond.map_or(0, |n| n / 1_000_000);
        if let Some(d) = capture_date(
            i32::from(dt.year),
            dt.month,
            dt.day,
            (dt.hour, dt.minute, dt.second, millis),
            dt.offset.map(i32::from),
        ) {
            return Some(d);
        }
    }
    None
}

fn capture_date(
    year: i32,
    month: u8,
    day: u8,
    (hour, minute, second, millis): (u8, u8, u8, u32),
    offset_min: Option<i32>,
) -> Option<CaptureDate> {
    let month = Month::try_from(month).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms_milli(hour, minute, second, u16::try_from(millis).ok()?).ok()?;
    let local_ms = (PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp_nanos()
        / 1_000_000) as i64;
    let utc_ms = local_ms - i64::from(offset_min.unwrap_or(0)) * 60_000;
    Some(CaptureDate {
        utc_ms,
        local_ms,
        offset_min,
    })
}

// ---------------------------------------------------------------------------------------------
// Frame headers

/// Width and height from a JPEG's start-of-frame segment.
fn jpeg_size(data: &[u8]) -> Option<(u32, u32)> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    while i + 4 <= data.len() {
        if data[i] != 0xFF {
            return None;
        }
        let marker = data[i + 1];
        if marker == 0xFF {
            // Fill byte.
            i += 1;
            continue;
        }
        if marker == 0xD8 || marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            i += 2;
            continue;
        }
        if marker == 0xD9 || marker == 0xDA {
            // End of image or start of scan: no frame header before it.
            return None;
        }
        let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let seg = data.get(i + 4..i + 2 + len)?;
            let height = u32::from(u16::from_be_bytes([*seg.get(1)?, *seg.get(2)?]));
            let width = u32::from(u16::from_be_bytes([*seg.get(3)?, *seg.get(4)?]));
            return (width > 0 && height > 0).then_some((width, height));
        }
        i += 2 + len;
    }
    None
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(data: &[u8]) -> Option<(u32, u32)> {
    const SIG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !data.starts_with(SIG) || data.get(12..16)? != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(data.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(data.get(20..24)?.try_into().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

// ---------------------------------------------------------------------------------------------
// XMP

#[derive(Debug, Default)]
struct Xmp {
    description: Option<String>,
    date: Option<CaptureDate>,
}

/// Reads `dc:description` (the `x-default` alternative, else the first) and the first date of
/// `exif:DateTimeOriginal`, `xmp:CreateDate`, as element or attribute. Namespaces are matched by
/// URI, so any prefix works. An unparsable sidecar gives nothing.
fn read_xmp(bytes: &[u8]) -> Xmp {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_start_matches('\u{feff}').trim_start();
    let Ok(doc) = roxmltree::Document::parse(text) else {
        return Xmp::default();
    };
    let description = property(&doc, NS_DC, "description").filter(|d| !d.trim().is_empty());
    let date = property(&doc, NS_EXIF, "DateTimeOriginal")
        .and_then(|d| xmp_date(&d))
        .or_else(|| property(&doc, NS_XMP, "CreateDate").and_then(|d| xmp_date(&d)));
    Xmp { description, date }
}

fn property(doc: &roxmltree::Document<'_>, ns: &str, name: &str) -> Option<String> {
    for node in doc.descendants().filter(|n| n.is_element()) {
        if let Some(v) = node.attribute((ns, name)) {
            return Some(v.to_string());
        }
        if node.tag_name().namespace() == Some(ns) && node.tag_name().name() == name {
            return Some(element_value(node));
        }
    }
    None
}

/// A property's value: the preferred `rdf:li` of an `rdf:Alt`/`Seq`/`Bag`, else its text.
fn element_value(node: roxmltree::Node<'_, '_>) -> String {
    let items: Vec<roxmltree::Node<'_, '_>> = node
        .descendants()
        .filter(|n| n.tag_name().namespace() == Some(NS_RDF) && n.tag_name().name() == "li")
        .collect();
    let chosen = items
        .iter()
        .find(|n| n.attribute((NS_XML, "lang")) == Some("x-default"))
        .or(items.first());
    let source = chosen.copied().unwrap_or(node);
    source
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<String>()
}

/// An XMP date: `YYYY-MM-DD[THH:MM[:SS[.sss]]][Z|±HH:MM]`.
fn xmp_date(s: &str) -> Option<CaptureDate> {
    let s = s.trim();
    let (date, rest) = s.split_at(s.find('T').unwrap_or(s.len()));
    let mut d = date.split('-');
    let year: i32 = d.next()?.parse().ok()?;
    let month: u8 = d.next().map_or(Some(1), |m| m.parse().ok())?;
    let day: u8 = d.next().map_or(Some(1), |m| m.parse().ok())?;
    let rest = rest.strip_prefix('T').unwrap_or(rest);
    let (clock, offset_min) = match rest.find(['Z', '+', '-']) {
        Some(pos) => {
            let (clock, zone) = rest.split_at(pos);
            (clock, parse_zone(zone)?)
        }
        None => (rest, None),
    };
    let mut parts = clock.split(':');
    let hour: u8 = parts
        .next()
        .filter(|p| !p.is_empty())
        .map_or(Some(0), |p| p.parse().ok())?;
    let minute: u8 = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let (second, millis) = match parts.next() {
        None => (0, 0),
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            let frac: String = frac.chars().chain("000".chars()).take(3).collect();
            (whole.parse().ok()?, frac.parse().ok()?)
        }
    };
    capture_date(year, month, day, (hour, minute, second, millis), offset_min)
}

fn parse_zone(zone: &str) -> Option<Option<i32>> {
    if zone == "Z" {
        return Some(Some(0));
    }
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let (h, m) = zone
        .get(1..)?
        .split_once(':')
        .unwrap_or((zone.get(1..)?, "0"));
    Some(Some(
        sign * (h.parse::<i32>().ok()? * 60 + m.parse::<i32>().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Photo;

    #[test]
    fn reads_what_the_fixture_writes() {
        let data = Photo::new("t")
            .taken("2019:07:04 18:30:00", Some("+02:00"))
            .subsec("250")
            .camera("Canon", "EOS R5")
            .lens("RF24-70mm F2.8 L IS USM")
            .size(6000, 4000)
            .orientation(6)
            .description("at the lake")
            .exposure((1, 250), (28, 10), 400, (50, 1))
            .jpeg();
        let m = extract(&data, None);
        let date = m.date.expect("date");
        assert_eq!(
            crate::state::fmt_ts(date.utc_ms),
            "2019-07-04T16:30:00.250Z"
        );
        assert_eq!(
            crate::state::fmt_ts(date.local_ms),
            "2019-07-04T18:30:00.250Z"
        );
        assert_eq!(date.time_zone().as_deref(), Some("UTC+2"));
        assert_eq!(m.make.as_deref(), Some("Canon"));
        assert_eq!(m.model.as_deref(), Some("EOS R5"));
        assert_eq!(m.lens_model.as_deref(), Some("RF24-70mm F2.8 L IS USM"));
        assert_eq!((m.width, m.height), (Some(6000), Some(4000)));
        assert_eq!(m.orientation, Some(6));
        assert_eq!(m.description, "at the lake");
        assert_eq!(m.exposure_time.as_deref(), Some("1/250"));
        assert_eq!(m.f_number, Some(2.8));
        assert_eq!(m.iso, Some(400));
        assert_eq!(m.focal_length, Some(50.0));
    }

    #[test]
    fn no_exif_means_nothing() {
        assert_eq!(extract(b"not an image", None), Extracted::default());
        let plain = Photo::new("plain").jpeg();
        assert_eq!(extract(&plain, None).date, None);
    }

    #[test]
    fn offsets_and_zone_names() {
        let d = xmp_date("2020-01-02T03:04:05.6-05:30").unwrap();
        assert_eq!(crate::state::fmt_ts(d.utc_ms), "2020-01-02T08:34:05.600Z");
        assert_eq!(d.time_zone().as_deref(), Some("UTC-5:30"));
        let z = xmp_date("2020-01-02T03:04:05Z").unwrap();
        assert_eq!(z.time_zone().as_deref(), Some("UTC+0"));
        let naive = xmp_date("2020-01-02T03:04").unwrap();
        assert_eq!(naive.utc_ms, naive.local_ms);
        assert_eq!(naive.time_zone(), None);
        assert!(xmp_date("yesterday").is_none());
    }

    #[test]
    fn sidecar_description_and_date() {
        let xmp = crate::fixtures::xmp_sidecar(Some("A & B <3"), Some("2018-03-04T05:06:07+01:00"));
        let m = extract(b"", Some(xmp.as_bytes()));
        assert_eq!(m.description, "A & B <3");
        assert_eq!(
            crate::state::fmt_ts(m.date.unwrap().utc_ms),
            "2018-03-04T04:06:07.000Z"
        );
        // Attribute form, another prefix, and an EXIF description that wins.
        let attr = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF
            xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description
            xmlns:d="http://purl.org/dc/elements/1.1/" d:description="attr form"/></rdf:RDF>
            </x:xmpmeta>"#;
        assert_eq!(extract(b"", Some(attr.as_bytes())).description, "attr form");
        let with_exif = Photo::new("d").description("from exif").jpeg();
        assert_eq!(
            extract(&with_exif, Some(attr.as_bytes())).description,
            "from exif"
        );
        assert_eq!(extract(b"", Some(b"<not xml")).description, "");
    }
}
