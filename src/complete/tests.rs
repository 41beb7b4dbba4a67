//! Real, small files built here with correct structure, checked whole and cut at every byte,
//! and property tests over generated and arbitrary bytes.

use super::*;
use proptest::prelude::*;
use std::io::Cursor;
use std::sync::mpsc;
use std::time::Duration;

fn check(bytes: &[u8]) -> Completeness {
    check_reader(Cursor::new(bytes), bytes.len() as u64).expect("in-memory reads do not fail")
}

/// Runs the check on another thread so that a loop that never ends fails the test instead of
/// hanging it.
fn check_in_time(bytes: Vec<u8>) -> Completeness {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(check(&bytes));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the check finishes (no endless loop, no panic)")
}

fn is_incomplete(c: &Completeness) -> bool {
    matches!(c, Completeness::Incomplete(_))
}

/// Checks `bytes` cut at every length: shorter than `magic` it is not recognised, from
/// `complete_from` on it is complete, and in between incomplete.
fn assert_every_prefix(bytes: &[u8], magic: usize, complete_from: usize) {
    for p in 0..=bytes.len() {
        let got = check(&bytes[..p]);
        if p < magic {
            assert_eq!(
                got,
                Completeness::Unknown(Unsure::OtherFormat),
                "cut at {p}"
            );
        } else if p >= complete_from {
            assert_eq!(got, Completeness::Complete, "cut at {p} of {}", bytes.len());
        } else {
            assert!(
                is_incomplete(&got),
                "cut at {p} of {}: {got:?}",
                bytes.len()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JPEG

fn jpeg_segment(out: &mut Vec<u8>, code: u8, payload: &[u8], fill: usize) {
    out.extend(std::iter::repeat_n(0xFF, fill));
    out.extend([0xFF, code]);
    let len = u16::try_from(payload.len() + 2).expect("test segments are small");
    out.extend(len.to_be_bytes());
    out.extend(payload);
}

const SOS: u8 = 0xDA;
const JFIF: &[u8] = b"JFIF\0\x01\x01\x00\x00\x01\x00\x01\x00\x00";
const SOF0_8X8_GRAY: &[u8] = &[8, 0, 8, 0, 8, 1, 1, 0x11, 0];
/// A DC and an AC table, each with one 1-bit code: '0' for DC category 0 and for EOB.
const DHT_TINY: &[u8] = &[
    0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, //
    0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00,
];
const SOS_GRAY: &[u8] = &[1, 1, 0x00, 0, 63, 0];

fn dqt() -> Vec<u8> {
    let mut q = vec![0u8];
    q.extend([1u8; 64]);
    q
}

/// A JPEG built segment by segment; `build` also says where its end-of-image marker ends.
#[derive(Debug, Clone)]
struct JpegSpec {
    /// Marker segments between SOI and the first scan.
    segments: Vec<(u8, Vec<u8>)>,
    /// The entropy-coded data of each scan, before byte stuffing.
    scans: Vec<Vec<u8>>,
    /// A restart marker after every this many data bytes (0: none).
    restart_every: usize,
    /// 0xFF fill bytes before every marker.
    fill: usize,
    /// What follows the end-of-image marker (a Motion Photo's MP4).
    trailer: Vec<u8>,
}

impl JpegSpec {
    /// An 8×8 grey image that decoders accept (djpeg decodes it), with `trailer` after it.
    fn minimal(trailer: Vec<u8>) -> Self {
        JpegSpec {
            segments: vec![
                (0xE0, JFIF.to_vec()),
                (0xDB, dqt()),
                (0xC0, SOF0_8X8_GRAY.to_vec()),
                (0xC4, DHT_TINY.to_vec()),
            ],
            // DC category 0 ('0'), EOB ('0'), padded with 1 bits.
            scans: vec![vec![0x3F]],
            restart_every: 0,
            fill: 0,
            trailer,
        }
    }

    fn build(&self) -> (Vec<u8>, usize) {
        let mut out = vec![0xFF, SOI];
        for (code, payload) in &self.segments {
            jpeg_segment(&mut out, *code, payload, self.fill);
        }
        for (i, scan) in self.scans.iter().enumerate() {
            if i > 0 {
                // A progressive JPEG has tables between its scans.
                jpeg_segment(&mut out, 0xC4, DHT_TINY, self.fill);
            }
            jpeg_segment(&mut out, SOS, SOS_GRAY, self.fill);
            for (k, &b) in scan.iter().enumerate() {
                if self.restart_every > 0 && k > 0 && k % self.restart_every == 0 {
                    let n = (k / self.restart_every - 1) % 8;
                    out.extend([0xFF, 0xD0 + n as u8]);
                }
                out.push(b);
                if b == 0xFF {
                    out.push(0x00);
                }
            }
        }
        out.extend(std::iter::repeat_n(0xFF, self.fill));
        out.extend([0xFF, EOI]);
        let eoi_end = out.len();
        out.extend(&self.trailer);
        (out, eoi_end)
    }
}

/// An EXIF segment carrying a thumbnail JPEG, whose end marker is not the file's end.
fn exif_with_thumbnail() -> Vec<u8> {
    let mut payload = b"Exif\0\0II*\0\x08\0\0\0".to_vec();
    payload.extend(JpegSpec::minimal(Vec::new()).build().0);
    // More IFD data after the thumbnail.
    payload.extend([0x11; 10]);
    payload
}

#[test]
fn jpeg_minimal_is_complete_and_every_cut_is_not() {
    let (bytes, eoi_end) = JpegSpec::minimal(Vec::new()).build();
    assert_eq!(eoi_end, bytes.len());
    assert_eq!(check(&bytes), Completeness::Complete);
    assert_every_prefix(&bytes, 3, bytes.len());
}

#[test]
fn jpeg_cut_without_end_marker_says_so() {
    let (bytes, _) = JpegSpec::minimal(Vec::new()).build();
    let cut = &bytes[..bytes.len() - 2];
    assert_eq!(
        check(cut),
        Completeness::Incomplete(Why::NoEnd {
            format: Format::Jpeg
        })
    );
    assert_eq!(
        check(cut).to_string(),
        "incomplete: JPEG: no end-of-image marker (FFD9)"
    );
}

#[test]
fn jpeg_thumbnail_end_marker_inside_app1_is_not_the_end() {
    let mut spec = JpegSpec::minimal(Vec::new());
    spec.segments.insert(0, (0xE1, exif_with_thumbnail()));
    let (bytes, _) = spec.build();
    assert_eq!(check(&bytes), Completeness::Complete);
    // Cut right after the thumbnail's FFD9: the last two bytes look like an end, and a search
    // for the first FFD9 would find one; the segment walk knows APP1 is not over.
    let app1_end = 2 + 4 + exif_with_thumbnail().len();
    let cut = &bytes[..app1_end - 10];
    assert_eq!(&cut[cut.len() - 2..], &[0xFF, 0xD9]);
    assert_eq!(
        check(cut),
        Completeness::Incomplete(Why::PastEnd {
            format: Format::Jpeg,
            part: Part::Segment(0xE1),
            end: app1_end as u64,
            len: cut.len() as u64,
        })
    );
    assert_eq!(
        check(cut).to_string(),
        format!(
            "incomplete: JPEG: segment APP1 (FFE1) ends at byte {app1_end} but the file has {} \
             bytes",
            cut.len()
        )
    );
    assert_every_prefix(&bytes, 3, bytes.len());
}

fn small_mp4() -> Vec<u8> {
    bmff(&[
        ftyp(b"mp42", &[b"isom", b"mp42"]),
        bx(b"mdat", vec![0xAB; 300]),
        bx(b"moov", vec![0x11; 60]),
    ])
    .0
}

#[test]
fn jpeg_motion_photo_with_mp4_after_the_end_is_complete() {
    let (bytes, eoi_end) = JpegSpec::minimal(small_mp4()).build();
    assert!(bytes.len() > eoi_end + 300);
    assert_eq!(check(&bytes), Completeness::Complete);
    // Before the still image's end: incomplete; after it, the video cannot be told apart from
    // trailing bytes, so every cut is complete (a limit the module doc states).
    assert_every_prefix(&bytes, 3, eoi_end);
}

#[test]
fn jpeg_mpf_second_image_after_the_end_is_complete() {
    let second = JpegSpec::minimal(Vec::new()).build().0;
    let mut spec = JpegSpec::minimal(second);
    spec.segments
        .insert(1, (0xE2, b"MPF\0MM\0*\0\0\0\x08".to_vec()));
    let (bytes, eoi_end) = spec.build();
    assert_eq!(check(&bytes), Completeness::Complete);
    assert_every_prefix(&bytes, 3, eoi_end);
}

#[test]
fn jpeg_progressive_scans_with_stuffing_restarts_and_fill_bytes() {
    let spec = JpegSpec {
        segments: vec![
            (0xE0, JFIF.to_vec()),
            (0xDB, dqt()),
            (0xDD, vec![0, 4]),
            (0xC2, SOF0_8X8_GRAY.to_vec()),
            (0xC4, DHT_TINY.to_vec()),
            (0xFE, b"made \xFF\xD9 here".to_vec()),
        ],
        scans: vec![
            vec![0xFF, 0xD9, 0x00, 0xFF, 0xFF, 0x12, 0xFF, 0xD8, 0x34, 0xFF],
            vec![0xFF; 9],
            (0u8..=255).collect(),
        ],
        restart_every: 4,
        fill: 2,
        trailer: Vec::new(),
    };
    let (bytes, _) = spec.build();
    assert_eq!(check(&bytes), Completeness::Complete);
    assert_every_prefix(&bytes, 3, bytes.len());
}

#[test]
fn jpeg_reserved_tail_of_zeros_is_incomplete() {
    // A writer that sets the file's length first and fills it in order: the headers and part
    // of the scan are there, the rest is zeros.
    let (mut bytes, _) = JpegSpec::minimal(Vec::new()).build();
    bytes.truncate(bytes.len() - 3);
    bytes.extend([0u8; 4096]);
    assert_eq!(
        check(&bytes),
        Completeness::Incomplete(Why::NoEnd {
            format: Format::Jpeg
        })
    );
}

#[test]
fn jpeg_extraneous_bytes_between_segments_are_skipped() {
    // libjpeg accepts padding between segments (with a warning); so does the check.
    let (bytes, _) = JpegSpec::minimal(Vec::new()).build();
    let app0_end = 2 + 4 + JFIF.len();
    let mut padded = bytes[..app0_end].to_vec();
    padded.extend([0x00, 0x00, 0x20]);
    padded.extend(&bytes[app0_end..]);
    assert_eq!(check(&padded), Completeness::Complete);
}

#[test]
fn jpeg_segment_length_below_two_is_malformed_and_ends() {
    for len in [0u8, 1] {
        let bytes = vec![0xFF, SOI, 0xFF, 0xE0, 0x00, len, 0xFF, EOI];
        assert_eq!(
            check_in_time(bytes),
            Completeness::Unknown(Unsure::Malformed {
                format: Format::Jpeg,
                offset: 4,
                what: "a segment length below 2",
            })
        );
    }
}

#[test]
fn jpeg_ls_is_not_scanned() {
    let bytes = vec![0xFF, SOI, 0xFF, 0xF7, 0x00, 0x02, 0xFF, EOI];
    assert_eq!(check(&bytes), Completeness::Unknown(Unsure::OtherFormat));
}

// ---------------------------------------------------------------------------------------------
// PNG

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend(u32::try_from(data.len()).expect("small").to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

/// The zlib stream of `data` in one stored (uncompressed) block.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("small");
    let mut out = vec![0x78, 0x01, 0x01];
    out.extend(len.to_le_bytes());
    out.extend((!len).to_le_bytes());
    out.extend(data);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend(((b << 16) | a).to_be_bytes());
    out
}

/// A PNG of `chunks` between IHDR and IEND; `build` also says where IEND ends.
fn png(chunks: &[(&[u8; 4], Vec<u8>)], trailer: &[u8]) -> (Vec<u8>, usize) {
    let mut out = PNG_SIGNATURE.to_vec();
    // 1×1, 8-bit grey.
    png_chunk(&mut out, b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]);
    for (kind, data) in chunks {
        png_chunk(&mut out, kind, data);
    }
    png_chunk(&mut out, b"IEND", &[]);
    let iend_end = out.len();
    out.extend(trailer);
    (out, iend_end)
}

fn png_minimal() -> Vec<u8> {
    png(&[(b"IDAT", zlib_stored(&[0, 0x80]))], &[]).0
}

#[test]
fn png_minimal_is_complete_and_every_cut_is_not() {
    let bytes = png_minimal();
    assert_eq!(check(&bytes), Completeness::Complete);
    assert_every_prefix(&bytes, 8, bytes.len());
    assert_eq!(
        check(&bytes[..bytes.len() - 12]),
        Completeness::Incomplete(Why::NoEnd {
            format: Format::Png
        })
    );
}

#[test]
fn png_bytes_after_iend_are_allowed() {
    let (bytes, iend_end) = png(
        &[
            (b"tEXt", b"Comment\0IEND inside text".to_vec()),
            (b"IDAT", zlib_stored(&[0, 0x80])),
        ],
        b"trailing junk IEND",
    );
    assert_eq!(check(&bytes), Completeness::Complete);
    assert_every_prefix(&bytes, 8, iend_end);
}

#[test]
fn png_cut_inside_idat_names_the_chunk() {
    let (bytes, _) = png(&[(b"IDAT", vec![7; 1000])], &[]);
    let cut = &bytes[..500];
    assert_eq!(
        check(cut).to_string(),
        "incomplete: PNG: chunk 'IDAT' ends at byte 1045 but the file has 500 bytes"
    );
}

#[test]
fn png_reserved_tail_of_zeros_is_incomplete() {
    let bytes = png_minimal();
    let mut reserved = bytes[..33].to_vec(); // signature and IHDR
    reserved.extend([0u8; 100]);
    assert_eq!(
        check(&reserved),
        Completeness::Incomplete(Why::ZeroFilled {
            format: Format::Png,
            offset: 33
        })
    );
}

// ---------------------------------------------------------------------------------------------
// ISO-BMFF

/// One top-level box for [`bmff`].
#[derive(Debug, Clone)]
struct Bx {
    kind: [u8; 4],
    payload: Vec<u8>,
    /// A 64-bit size (size field 1).
    large: bool,
    /// Size field 0: to the end of the file (for the last box).
    to_end: bool,
}

fn bx(kind: &[u8; 4], payload: Vec<u8>) -> Bx {
    Bx {
        kind: *kind,
        payload,
        large: false,
        to_end: false,
    }
}

fn ftyp(major: &[u8; 4], compatible: &[&[u8; 4]]) -> Bx {
    let mut payload = major.to_vec();
    payload.extend([0, 0, 2, 0]);
    for b in compatible {
        payload.extend(*b);
    }
    bx(b"ftyp", payload)
}

/// Where a box lies in the file [`bmff`] built.
#[derive(Debug, Clone)]
struct Placed {
    kind: [u8; 4],
    start: usize,
    /// The bytes before the payload; for `uuid` including its 16-byte user type.
    header: usize,
    end: usize,
    to_end: bool,
}

fn bmff(boxes: &[Bx]) -> (Vec<u8>, Vec<Placed>) {
    let mut out = Vec::new();
    let mut placed = Vec::new();
    for b in boxes {
        let start = out.len();
        let user_type: &[u8] = if &b.kind == b"uuid" { &[0x5A; 16] } else { &[] };
        let body = user_type.len() + b.payload.len();
        if b.to_end {
            out.extend(0u32.to_be_bytes());
            out.extend(b.kind);
        } else if b.large {
            out.extend(1u32.to_be_bytes());
            out.extend(b.kind);
            out.extend((16 + body as u64).to_be_bytes());
        } else {
            out.extend(u32::try_from(8 + body).expect("small").to_be_bytes());
            out.extend(b.kind);
        }
        out.extend(user_type);
        let header = out.len() - start;
        out.extend(&b.payload);
        placed.push(Placed {
            kind: b.kind,
            start,
            header,
            end: out.len(),
            to_end: b.to_end,
        });
    }
    (out, placed)
}

/// Whether the first `p` bytes of the file laid out as `placed` are complete, from the layout
/// alone: the boxes span the cut exactly (or the last one runs to the end) and the boxes the
/// format needs are among them.
fn bmff_prefix_complete(placed: &[Placed], needs: &[&[u8; 4]], p: usize) -> bool {
    if p < 8 {
        return false;
    }
    let mut seen = Vec::new();
    for b in placed {
        if p == b.start {
            break;
        }
        if p < b.start + b.header {
            return false;
        }
        if b.to_end {
            seen.push(b.kind);
            break;
        }
        if p < b.end {
            return false;
        }
        seen.push(b.kind);
    }
    needs.iter().all(|n| seen.contains(n))
}

fn assert_bmff_prefixes(boxes: &[Bx], needs: &[&[u8; 4]]) {
    let (bytes, placed) = bmff(boxes);
    assert_eq!(check(&bytes), Completeness::Complete, "{boxes:?}");
    for p in 0..=bytes.len() {
        let got = check(&bytes[..p]);
        if p < 8 {
            assert_eq!(
                got,
                Completeness::Unknown(Unsure::OtherFormat),
                "cut at {p}"
            );
        } else if bmff_prefix_complete(&placed, needs, p) {
            assert_eq!(got, Completeness::Complete, "cut at {p}");
        } else {
            assert!(is_incomplete(&got), "cut at {p}: {got:?}");
        }
    }
}

#[test]
fn mp4_mdat_first_moov_last() {
    let boxes = [
        ftyp(b"isom", &[b"isom", b"iso2", b"mp41"]),
        bx(b"free", vec![]),
        bx(b"mdat", vec![0xFF; 500]),
        bx(b"moov", vec![0x22; 80]),
    ];
    assert_bmff_prefixes(&boxes, &[b"moov", b"mdat"]);
    // Only the whole file is complete.
    let (bytes, _) = bmff(&boxes);
    let complete = (0..bytes.len())
        .filter(|&p| check(&bytes[..p]) == Completeness::Complete)
        .count();
    assert_eq!(complete, 0);
}

#[test]
fn mp4_moov_first_mdat_last() {
    let boxes = [
        ftyp(b"mp42", &[b"mp42", b"isom"]),
        bx(b"moov", vec![0x22; 80]),
        bx(b"mdat", vec![0x33; 500]),
    ];
    assert_bmff_prefixes(&boxes, &[b"moov", b"mdat"]);
    let (bytes, _) = bmff(&boxes);
    let moov_end = 24 + 88;
    assert_eq!(
        check(&bytes[..moov_end]),
        Completeness::Incomplete(Why::Missing {
            format: Format::Video,
            part: MDAT
        })
    );
}

#[test]
fn mov_and_3gp_brands_need_moov() {
    for major in [b"qt  ", b"3gp4", b"M4V "] {
        let (bytes, _) = bmff(&[ftyp(major, &[major]), bx(b"mdat", vec![1; 50])]);
        assert_eq!(
            check(&bytes),
            Completeness::Incomplete(Why::Missing {
                format: Format::Video,
                part: MOOV
            })
        );
    }
}

#[test]
fn quicktime_without_ftyp_is_a_video() {
    let boxes = [
        bx(b"wide", vec![]),
        bx(b"mdat", vec![5; 100]),
        bx(b"moov", vec![6; 40]),
    ];
    assert_bmff_prefixes(&boxes, &[b"moov", b"mdat"]);
}

#[test]
fn heic_needs_meta_not_moov() {
    let boxes = [
        ftyp(b"heic", &[b"mif1", b"heic"]),
        bx(b"meta", vec![0x44; 120]),
        bx(b"mdat", vec![0x55; 400]),
    ];
    assert_bmff_prefixes(&boxes, &[b"meta"]);
    let (bytes, _) = bmff(&[ftyp(b"avif", &[b"avif", b"mif1"]), bx(b"mdat", vec![0; 9])]);
    assert_eq!(
        check(&bytes),
        Completeness::Incomplete(Why::Missing {
            format: Format::Heif,
            part: META
        })
    );
    assert_eq!(
        check(&bytes).to_string(),
        "incomplete: HEIF/AVIF: no 'meta' box"
    );
}

#[test]
fn heif_with_mdat_first() {
    let boxes = [
        ftyp(b"mif1", &[b"mif1", b"heic"]),
        bx(b"mdat", vec![0x55; 400]),
        bx(b"meta", vec![0x44; 120]),
    ];
    assert_bmff_prefixes(&boxes, &[b"meta"]);
}

#[test]
fn mp4_with_64_bit_mdat() {
    let mut mdat = bx(b"mdat", vec![0x66; 700]);
    mdat.large = true;
    let boxes = [
        ftyp(b"mp41", &[b"mp41"]),
        mdat,
        bx(b"uuid", vec![1, 2, 3]),
        bx(b"moov", vec![0x77; 50]),
    ];
    assert_bmff_prefixes(&boxes, &[b"moov", b"mdat"]);
}

#[test]
fn mp4_with_last_box_to_the_end_of_the_file() {
    // mdat of size 0 written first and moov never added: what ffmpeg leaves until it finishes.
    let mut open_mdat = bx(b"mdat", vec![9; 300]);
    open_mdat.to_end = true;
    let boxes = [
        ftyp(b"isom", &[b"isom"]),
        bx(b"free", vec![]),
        open_mdat.clone(),
    ];
    let (bytes, _) = bmff(&boxes);
    for p in 8..=bytes.len() {
        assert!(is_incomplete(&check(&bytes[..p])), "cut at {p}");
    }
    // With moov first, a last mdat of size 0 is complete wherever it is cut: a stated limit.
    let boxes = [
        ftyp(b"isom", &[b"isom"]),
        bx(b"moov", vec![8; 60]),
        open_mdat,
    ];
    assert_bmff_prefixes(&boxes, &[b"moov", b"mdat"]);
}

#[test]
fn unknown_brand_spans_or_not() {
    let (bytes, _) = bmff(&[ftyp(b"zzzz", &[b"zzzz"]), bx(b"abcd", vec![0; 40])]);
    assert_eq!(
        check(&bytes),
        Completeness::Unknown(Unsure::UnknownBrand(FourCc(*b"zzzz")))
    );
    assert!(is_incomplete(&check(&bytes[..bytes.len() - 1])));
    // An unknown major brand with only video compatible brands is a video (CR3: 'crx ', 'isom').
    let (bytes, _) = bmff(&[ftyp(b"crx ", &[b"crx ", b"isom"]), bx(b"mdat", vec![0; 4])]);
    assert_eq!(
        check(&bytes),
        Completeness::Incomplete(Why::Missing {
            format: Format::Video,
            part: MOOV
        })
    );
}

#[test]
fn box_tail_too_short_for_a_header() {
    let (mut bytes, _) = bmff(&[ftyp(b"isom", &[]), bx(b"moov", vec![]), bx(b"mdat", vec![])]);
    let end = bytes.len() as u64;
    bytes.extend([0x00, 0x00, 0x01]);
    let got = check(&bytes);
    assert_eq!(
        got,
        Completeness::Incomplete(Why::ShortTail {
            format: Format::Video,
            end,
            len: end + 3
        })
    );
    assert_eq!(
        got.to_string(),
        format!(
            "incomplete: MP4/MOV: the boxes end at byte {end} of {}; the last 3 bytes are too few \
             for another box",
            end + 3
        )
    );
}

#[test]
fn box_claiming_two_to_the_64_bytes_is_incomplete_without_allocating() {
    let mut bytes = bmff(&[ftyp(b"isom", &[b"isom"])]).0;
    bytes.extend(1u32.to_be_bytes());
    bytes.extend(b"mdat");
    bytes.extend(u64::MAX.to_be_bytes());
    bytes.extend([0u8; 64]);
    assert_eq!(
        check_in_time(bytes.clone()),
        Completeness::Incomplete(Why::PastEnd {
            format: Format::Video,
            part: Part::Box(MDAT),
            end: u64::MAX,
            len: bytes.len() as u64,
        })
    );
}

#[test]
fn box_sizes_that_cannot_be_are_malformed_and_end() {
    let base = bmff(&[ftyp(b"isom", &[b"isom"])]).0;
    let at = base.len() as u64;
    // Sizes 2 to 7, a 64-bit size below 16, a uuid box too small for its user type.
    let mut cases = Vec::new();
    for size in 2u32..8 {
        let mut b = base.clone();
        b.extend(size.to_be_bytes());
        b.extend(b"free");
        b.extend([0u8; 32]);
        cases.push(b);
    }
    for large in [0u64, 8, 15] {
        let mut b = base.clone();
        b.extend(1u32.to_be_bytes());
        b.extend(b"free");
        b.extend(large.to_be_bytes());
        b.extend([0u8; 32]);
        cases.push(b);
    }
    let mut b = base.clone();
    b.extend(20u32.to_be_bytes());
    b.extend(b"uuid");
    b.extend([1u8; 32]);
    cases.push(b);
    for bytes in cases {
        match check_in_time(bytes) {
            Completeness::Unknown(Unsure::Malformed { offset, .. }) => assert_eq!(offset, at),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn reserved_tail_of_zeros_in_a_box_file_is_incomplete() {
    let (mut bytes, _) = bmff(&[ftyp(b"isom", &[b"isom"]), bx(b"moov", vec![1; 30])]);
    let at = bytes.len() as u64;
    bytes.extend([0u8; 1000]);
    assert_eq!(
        check(&bytes),
        Completeness::Incomplete(Why::ZeroFilled {
            format: Format::Video,
            offset: at
        })
    );
}

// ---------------------------------------------------------------------------------------------
// WebP

/// A WebP of `chunks` (`trailer` after the RIFF container); `build` also says where RIFF ends.
fn webp_file(chunks: &[(&[u8; 4], Vec<u8>)], trailer: &[u8]) -> (Vec<u8>, usize) {
    let mut body = b"WEBP".to_vec();
    for (kind, data) in chunks {
        body.extend(*kind);
        body.extend(u32::try_from(data.len()).expect("small").to_le_bytes());
        body.extend(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = b"RIFF".to_vec();
    out.extend(u32::try_from(body.len()).expect("small").to_le_bytes());
    out.extend(body);
    let riff_end = out.len();
    out.extend(trailer);
    (out, riff_end)
}

#[test]
fn webp_riff_must_fit() {
    let (bytes, riff_end) = webp_file(
        &[
            (b"VP8X", vec![0; 10]),
            (b"VP8L", vec![0x2F; 31]),
            (b"EXIF", vec![1; 7]),
        ],
        b"junk",
    );
    assert_eq!(check(&bytes), Completeness::Complete);
    assert_every_prefix(&bytes, 12, riff_end);
    assert_eq!(
        check(&bytes[..40]).to_string(),
        format!(
            "incomplete: WebP: RIFF container ends at byte {riff_end} but the file has 40 bytes"
        )
    );
}

#[test]
fn webp_without_image_chunk_is_malformed() {
    let (bytes, _) = webp_file(&[(b"EXIF", vec![1; 8])], &[]);
    assert!(matches!(
        check(&bytes),
        Completeness::Unknown(Unsure::Malformed { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Everything else, files, reading

#[test]
fn other_formats_are_unknown() {
    for bytes in [
        &b"GIF89a\x01\0\x01\0\0\0\0;"[..],
        b"II*\0\x08\0\0\0 a TIFF-based RAW",
        b"\xFF\x0A a JPEG XL codestream",
        b"The free software is here",
        b"",
        b"\xFF\xD8",
    ] {
        assert_eq!(check(bytes), Completeness::Unknown(Unsure::OtherFormat));
    }
}

#[test]
fn issue13_stall_mp4_half_written_is_incomplete() {
    // Under `run`, a writer put 100 MiB of a 200 MiB stall.mp4, paused 6 s, then wrote the rest:
    // the file had settled, was uploaded, and the server got two assets. Both ways of writing it,
    // as sparse files of the real sizes.
    const MIB: u64 = 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stall.mp4");
    let head = bmff(&[ftyp(b"isom", &[b"isom", b"mp41"])]).0;

    // A copy of a finished file: the mdat's size is final and runs past the half.
    let mut file = head.clone();
    file.extend(u32::try_from(200 * MIB - 1000).expect("fits").to_be_bytes());
    file.extend(b"mdat");
    std::fs::write(&path, &file).expect("write");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(100 * MIB).expect("set_len");
    let got = check_file(&path, 100 * MIB).expect("check");
    assert_eq!(
        got.to_string(),
        format!(
            "incomplete: MP4/MOV: box 'mdat' ends at byte {} but the file has {} bytes",
            head.len() as u64 + 200 * MIB - 1000,
            100 * MIB
        )
    );

    // A camera writing mdat first (size 0 until it finishes) and moov last.
    let mut file = head;
    file.extend(0u32.to_be_bytes());
    file.extend(b"mdat");
    std::fs::write(&path, &file).expect("write");
    f.set_len(100 * MIB).expect("set_len");
    let got = check_file(&path, 100 * MIB).expect("check");
    assert_eq!(
        got,
        Completeness::Incomplete(Why::Missing {
            format: Format::Video,
            part: MOOV
        })
    );
    assert_eq!(
        got.to_string(),
        "incomplete: MP4/MOV: no 'moov' box (a camera that writes 'mdat' first adds 'moov' last)"
    );
}

#[test]
fn the_first_bytes_decide_not_the_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (heic, _) = bmff(&[
        ftyp(b"heic", &[b"mif1", b"heic"]),
        bx(b"meta", vec![1; 20]),
        bx(b"mdat", vec![2; 50]),
    ]);
    let path = dir.path().join("really-a-heic.jpg");
    std::fs::write(&path, &heic).expect("write");
    assert_eq!(
        check_file(&path, heic.len() as u64).expect("check"),
        Completeness::Complete
    );
    let cut = heic.len() as u64 - 1;
    match check_file(&path, cut).expect("check") {
        Completeness::Incomplete(Why::PastEnd { format, .. }) => assert_eq!(format, Format::Heif),
        other => panic!("{other:?}"),
    }
    let (jpeg, _) = JpegSpec::minimal(Vec::new()).build();
    let path = dir.path().join("really-a-jpeg.mp4");
    std::fs::write(&path, &jpeg[..jpeg.len() - 1]).expect("write");
    assert_eq!(
        check_file(&path, jpeg.len() as u64 - 1).expect("check"),
        Completeness::Incomplete(Why::NoEnd {
            format: Format::Jpeg
        })
    );
}

#[test]
fn truncated_real_files_at_many_points() {
    // The same cuts as the in-memory tests, through the file system.
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        ("a.jpg", JpegSpec::minimal(Vec::new()).build().0),
        ("a.png", png_minimal()),
        ("a.mp4", small_mp4()),
    ];
    for (name, bytes) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).expect("write");
        let whole = bytes.len() as u64;
        assert_eq!(
            check_file(&path, whole).expect("check"),
            Completeness::Complete
        );
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        for cut in (12..whole).rev().step_by(7) {
            f.set_len(cut).expect("set_len");
            let got = check_file(&path, cut).expect("check");
            assert!(is_incomplete(&got), "{name} cut at {cut}: {got:?}");
        }
    }
}

#[test]
fn the_length_given_is_the_snapshot() {
    // Bytes past `len` (appended since the caller looked) are not read...
    let bytes = small_mp4();
    let short = bytes.len() as u64 - 10;
    assert_eq!(
        check_reader(Cursor::new(&bytes), short).expect("check"),
        check(&bytes[..bytes.len() - 10])
    );
    // ...and a file shorter than `len` (it shrank) is an error to look again, not an answer.
    let err = check_reader(Cursor::new(&bytes), bytes.len() as u64 + 100).expect_err("shrank");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gone.jpg");
    let err = check_file(&path, 10).expect_err("no file");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

/// Counts what a check reads.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

fn bytes_read(bytes: &[u8]) -> (Completeness, u64) {
    let mut r = Counting {
        inner: Cursor::new(bytes),
        read: 0,
    };
    let got = check_reader(&mut r, bytes.len() as u64).expect("check");
    (got, r.read)
}

#[test]
fn box_and_chunk_checks_read_headers_only() {
    let (mp4, _) = bmff(&[
        ftyp(b"isom", &[b"isom"]),
        bx(b"mdat", vec![0; 10 << 20]),
        bx(b"moov", vec![0; 100]),
    ]);
    let (got, read) = bytes_read(&mp4);
    assert_eq!(got, Completeness::Complete);
    assert!(
        read <= 2 * HEADER_READ as u64,
        "read {read} bytes of a 10 MiB MP4"
    );

    let (png, _) = png(&[(b"IDAT", vec![0; 10 << 20])], &[]);
    let (got, read) = bytes_read(&png);
    assert_eq!(got, Completeness::Complete);
    assert!(
        read <= 2 * HEADER_READ as u64,
        "read {read} bytes of a 10 MiB PNG"
    );
}

#[test]
fn jpeg_check_skips_segment_payloads_and_reads_the_scan_once() {
    let mut spec = JpegSpec::minimal(vec![0; 5 << 20]);
    // A 60 KiB APP segment is skipped by its length; the 1 MiB scan is read once.
    spec.segments.insert(0, (0xE2, vec![0; 60 << 10]));
    spec.scans = vec![vec![0x12; 1 << 20]];
    let (bytes, eoi_end) = spec.build();
    let (got, read) = bytes_read(&bytes);
    assert_eq!(got, Completeness::Complete);
    let scan = 1u64 << 20;
    assert!(read >= scan, "read {read}");
    assert!(
        read <= scan + 2 * BUF_SIZE as u64,
        "read {read} bytes of a JPEG of {eoi_end} (and a 5 MiB trailer)"
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests: a short run by default (proptest's 256 cases); more with PROPTEST_CASES.

fn jpeg_spec() -> impl Strategy<Value = JpegSpec> {
    let code = prop::sample::select(vec![
        0xE0u8, 0xE1, 0xE2, 0xEF, 0xDB, 0xC0, 0xC2, 0xC4, 0xDD, 0xFE,
    ]);
    // Bytes with many 0xFF and 0xD9 in them, the ones that matter.
    let byte = prop_oneof![4 => any::<u8>(), 1 => Just(0xFFu8), 1 => Just(0xD9u8)];
    let payload = prop::collection::vec(byte.clone(), 0..120);
    (
        prop::collection::vec((code, payload), 0..6),
        prop::collection::vec(prop::collection::vec(byte.clone(), 0..300), 1..4),
        0usize..20,
        0usize..3,
        prop::collection::vec(byte, 0..100),
    )
        .prop_map(|(segments, scans, restart_every, fill, trailer)| JpegSpec {
            segments,
            scans,
            restart_every,
            fill,
            trailer,
        })
}

fn png_spec() -> impl Strategy<Value = (Vec<u8>, usize)> {
    let kind = prop::sample::select(vec![*b"IDAT", *b"tEXt", *b"pHYs", *b"eXIf", *b"acTL"]);
    (
        prop::collection::vec((kind, prop::collection::vec(any::<u8>(), 0..200)), 0..6),
        prop::collection::vec(any::<u8>(), 0..50),
    )
        .prop_map(|(chunks, trailer)| {
            let chunks: Vec<(&[u8; 4], Vec<u8>)> =
                chunks.iter().map(|(k, d)| (k, d.clone())).collect();
            png(&chunks, &trailer)
        })
}

fn webp_spec() -> impl Strategy<Value = (Vec<u8>, usize)> {
    let extra = prop::sample::select(vec![*b"EXIF", *b"XMP ", *b"ICCP", *b"ALPH"]);
    (
        prop::collection::vec((extra, prop::collection::vec(any::<u8>(), 0..60)), 0..3),
        prop::sample::select(vec![*b"VP8 ", *b"VP8L", *b"ANMF"]),
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(any::<u8>(), 0..30),
    )
        .prop_map(|(extras, image, data, trailer)| {
            let mut chunks: Vec<([u8; 4], Vec<u8>)> = vec![(image, data)];
            chunks.extend(extras);
            let chunks: Vec<(&[u8; 4], Vec<u8>)> =
                chunks.iter().map(|(k, d)| (k, d.clone())).collect();
            webp_file(&chunks, &trailer)
        })
}

/// A box file: its boxes (ftyp first, the rest in any order) and the boxes its brand needs.
fn bmff_spec() -> impl Strategy<Value = (Vec<Bx>, Vec<[u8; 4]>)> {
    let brand = prop::sample::select(vec![
        (*b"isom", true),
        (*b"mp42", true),
        (*b"qt  ", true),
        (*b"3gp5", true),
        (*b"heic", false),
        (*b"avif", false),
        (*b"mif1", false),
    ]);
    let extra = prop::sample::select(vec![*b"free", *b"skip", *b"uuid", *b"wide", *b"udta"]);
    let payload = |max| prop::collection::vec(any::<u8>(), 0..max);
    (
        brand,
        prop::collection::vec((extra, payload(40)), 0..4),
        payload(400),
        payload(100),
        prop::collection::vec(any::<bool>(), 8),
        any::<bool>(),
    )
        .prop_flat_map(|((major, video), extras, data, header, large, to_end)| {
            let mut body = vec![bx(b"mdat", data)];
            if video {
                body.push(bx(b"moov", header));
            } else {
                body.push(bx(b"meta", header));
            }
            body.extend(extras.into_iter().map(|(k, p)| bx(&k, p)));
            for (b, l) in body.iter_mut().zip(large) {
                b.large = l;
            }
            let needs: Vec<[u8; 4]> = if video {
                vec![*b"moov", *b"mdat"]
            } else {
                vec![*b"meta"]
            };
            (Just(body).prop_shuffle(), Just((major, needs, to_end)))
        })
        .prop_map(|(body, (major, needs, to_end))| {
            let mut boxes = vec![ftyp(&major, &[&major, b"iso8"])];
            boxes.extend(body);
            if to_end {
                if let Some(last) = boxes.last_mut() {
                    last.to_end = true;
                }
            }
            (boxes, needs)
        })
}

/// Checks every cut of `bytes` also through a reader holding the whole file, given only the
/// cut's length: the answer must be the same.
fn check_cut(bytes: &[u8], p: usize) -> Completeness {
    let got = check(&bytes[..p]);
    let snapshot = check_reader(Cursor::new(bytes), p as u64).expect("in memory");
    assert_eq!(
        got, snapshot,
        "cut at {p}: a longer file changed the answer"
    );
    got
}

fn any_file() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        jpeg_spec().prop_map(|s| s.build().0),
        png_spec().prop_map(|(b, _)| b),
        webp_spec().prop_map(|(b, _)| b),
        bmff_spec().prop_map(|(boxes, _)| bmff(&boxes).0),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), cut in any::<u64>()) {
        let _ = check(&bytes);
        let len = bytes.len() as u64;
        let _ = check_reader(Cursor::new(&bytes), cut % (len + 1));
        let _ = check_reader(Cursor::new(&bytes), len + 1 + cut % 1000);
        let _ = check_reader(Cursor::new(&bytes), cut);
    }

    #[test]
    fn known_magic_then_arbitrary_bytes_never_panic(
        magic in prop::sample::select(vec![
            &b"\xFF\xD8\xFF"[..], PNG_SIGNATURE, b"RIFF\x10\0\0\0WEBP", b"\0\0\0\x10ftypisom",
            b"\0\0\0\x01ftyp", b"\0\0\0\0mdat",
        ]),
        tail in prop::collection::vec(prop_oneof![any::<u8>(), Just(0xFFu8), Just(0u8)], 0..2048),
    ) {
        let mut bytes = magic.to_vec();
        bytes.extend(tail);
        let _ = check(&bytes);
    }

    #[test]
    fn damaged_files_never_panic(
        file in any_file(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = file;
        for (at, value) in damage {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let _ = check(&bytes);
    }

    #[test]
    fn jpeg_cuts_are_complete_only_from_the_end_marker(spec in jpeg_spec()) {
        let (bytes, eoi_end) = spec.build();
        for p in 0..=bytes.len() {
            let got = check_cut(&bytes, p);
            if p < 3 {
                prop_assert_eq!(got, Completeness::Unknown(Unsure::OtherFormat));
            } else if p >= eoi_end {
                prop_assert_eq!(got, Completeness::Complete, "cut at {}", p);
            } else {
                prop_assert!(is_incomplete(&got), "cut at {} of {}: {:?}", p, eoi_end, got);
            }
        }
    }

    #[test]
    fn png_cuts_are_complete_only_from_iend((bytes, iend_end) in png_spec()) {
        for p in 0..=bytes.len() {
            let got = check_cut(&bytes, p);
            if p < 8 {
                prop_assert_eq!(got, Completeness::Unknown(Unsure::OtherFormat));
            } else if p >= iend_end {
                prop_assert_eq!(got, Completeness::Complete, "cut at {}", p);
            } else {
                prop_assert!(is_incomplete(&got), "cut at {}: {:?}", p, got);
            }
        }
    }

    #[test]
    fn webp_cuts_are_complete_only_from_the_riff_end((bytes, riff_end) in webp_spec()) {
        for p in 0..=bytes.len() {
            let got = check_cut(&bytes, p);
            if p < 12 {
                prop_assert_eq!(got, Completeness::Unknown(Unsure::OtherFormat));
            } else if p >= riff_end {
                prop_assert_eq!(got, Completeness::Complete, "cut at {}", p);
            } else {
                prop_assert!(is_incomplete(&got), "cut at {}: {:?}", p, got);
            }
        }
    }

    /// A cut of a box file is complete only where its layout says it can be: at a box boundary
    /// after the boxes it needs, or inside a last box of size 0 after them.
    #[test]
    fn box_file_cuts_are_complete_only_where_the_layout_is((boxes, needs) in bmff_spec()) {
        let (bytes, placed) = bmff(&boxes);
        let needs: Vec<&[u8; 4]> = needs.iter().collect();
        prop_assert_eq!(check(&bytes), Completeness::Complete);
        for p in 0..=bytes.len() {
            let got = check_cut(&bytes, p);
            if p < 8 {
                prop_assert_eq!(got, Completeness::Unknown(Unsure::OtherFormat));
            } else if bmff_prefix_complete(&placed, &needs, p) {
                prop_assert_eq!(got, Completeness::Complete, "cut at {}", p);
            } else {
                prop_assert!(is_incomplete(&got), "cut at {}: {:?}", p, got);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Not a test: times the check of a 200 MiB MP4 and a 10 MiB JPEG against `cat file >
/// /dev/null`, both from the page cache. Run with
/// `cargo test --release -p immish-sync --lib complete::tests::timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing() {
    use std::time::Instant;
    const MIB: usize = 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let mp4 = dir.path().join("big.mp4");
    let (bytes, _) = bmff(&[
        ftyp(b"isom", &[b"isom"]),
        bx(b"mdat", vec![0x5A; 200 * MIB - 1000]),
        bx(b"moov", vec![1; 900]),
    ]);
    std::fs::write(&mp4, &bytes).expect("write");
    drop(bytes);
    let mut spec = JpegSpec::minimal(Vec::new());
    // Random-looking entropy data with 0xFF in it, stuffed by the builder.
    let mut x = 0x2545_F491u32;
    spec.scans = vec![(0..10 * MIB - 1000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()];
    spec.restart_every = 4096;
    let jpg = dir.path().join("big.jpg");
    std::fs::write(&jpg, spec.build().0).expect("write");
    for path in [&mp4, &jpg] {
        let len = std::fs::metadata(path).expect("stat").len();
        // Warm the page cache, then time each three times.
        cat(path);
        for _ in 0..3 {
            let t = Instant::now();
            let got = check_file(path, len).expect("check");
            let check_time = t.elapsed();
            let t = Instant::now();
            cat(path);
            let cat_time = t.elapsed();
            assert_eq!(got, Completeness::Complete);
            println!(
                "{}: {} bytes: check {check_time:?}, cat {cat_time:?}",
                path.display(),
                len
            );
        }
    }
}

fn cat(path: &Path) {
    let devnull = File::create("/dev/null").expect("/dev/null");
    let status = std::process::Command::new("cat")
        .arg(path)
        .stdout(devnull)
        .status()
        .expect("cat");
    assert!(status.success());
}
