//! Whether a media file is structurally complete: for the formats whose structure says where
//! they end, the check that tells a file still being written from one that is done.
//!
//! "Settled" (size and mtime unchanged for a quiet period) is not "complete": a writer that
//! pauses for longer than the quiet period leaves a truncated file that looks settled, and
//! uploading it gives the server a broken asset and, once the rest arrives, a second one
//! (issue 13). A truncated JPEG has no end-of-image marker, a truncated PNG no `IEND` chunk,
//! and a truncated MP4 or HEIC a box that runs past the end of the file or no `moov`/`meta`.
//!
//! The format is decided by the first bytes (the magic), never by the file name: a `.jpg` that
//! is really a HEIC is checked as a HEIC, and a file whose first bytes match none of the formats
//! below (RAW formats other than CR3, GIF, JPEG XL, ...) is [`Completeness::Unknown`], for which
//! the caller relies on the quiet period alone.
//!
//! What each check reads:
//! - JPEG: every marker segment's header, seeking over the payloads (so the end marker of an
//!   EXIF thumbnail inside `APP1` is skipped, not taken for the end), and all of the
//!   entropy-coded data, since only a scan of it finds where it ends: about one sequential read
//!   of the file, in 64 KiB reads. It stops at the first end-of-image marker; what follows (the
//!   video of a Motion Photo, the second image of an MPF file) is allowed and not read.
//! - PNG: the 8-byte header of every chunk, seeking over the data; `IEND` must be there, and
//!   what follows it is allowed.
//! - ISO-BMFF (MP4, MOV, M4V, 3GP, HEIC, HEIF, AVIF; CR3 too, by its compatible brand `isom`):
//!   the header of every top-level box and the brands in `ftyp`. The boxes must span the file
//!   exactly; a video needs `moov` and `mdat`, a HEIF image `meta`.
//! - WebP: the RIFF header and every chunk header; the RIFF container must fit in the file.
//!
//! Headers are read through one buffer of at most 64 KiB (4 KiB reads outside JPEG scans), so
//! checking a 200 MiB MP4 reads a few KiB.
//!
//! The module must not panic, allocate in proportion to a size the file claims, loop without
//! moving forward, or read past the length the caller gives; it does no logging and knows
//! nothing about the catalogue or the watcher. It answers for one snapshot (a path and the length
//! the caller saw) and the caller decides what to do with the answer. What the answer cannot say:
//! - `Complete` means that no part the structure shows is missing. A writer that pauses at a
//!   point where the structure happens to be whole is not caught: a HEIC after its `meta` box, a
//!   Motion Photo after its still image, a fragmented MP4 between fragments, anywhere inside a
//!   last box of size 0 ("to the end of the file") once the boxes it needs are there.
//! - A file written out of order (a multi-part download filling holes) can look complete early.
//! - `Incomplete` says that a writer has most likely not finished. A file that stays incomplete
//!   while it does not change was cut short for good (an interrupted copy, a camera whose battery
//!   died) or carries junk after its last box, so the caller needs a limit on how long it waits.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// The answer for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    /// Every part the structure shows is there.
    Complete,
    /// A part is missing: the file is most likely still being written.
    Incomplete(Why),
    /// The structure does not say (an unchecked format, a damaged file).
    Unknown(Unsure),
}

/// The formats this module checks, as the first bytes (and for ISO-BMFF the brands) tell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    WebP,
    /// ISO-BMFF or QuickTime video: MP4, MOV, M4V, 3GP (and image sequences, which have tracks).
    Video,
    /// An ISO-BMFF still image: HEIC, HEIF, AVIF.
    Heif,
    /// ISO-BMFF whose brands are not known yet (before `ftyp` is read) or name neither kind.
    IsoBmff,
}

/// A four-character code: an ISO-BMFF box type, a PNG chunk type, a brand.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub [u8; 4]);

/// The part of a file that runs past its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A JPEG marker segment, by its marker code (the byte after 0xFF).
    Segment(u8),
    /// A PNG chunk.
    Chunk(FourCc),
    /// An ISO-BMFF box.
    Box(FourCc),
    /// A WebP's RIFF container.
    Riff,
}

/// Why a file is incomplete; `Display` says it for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// A segment, chunk or box says it ends at byte `end`, past the file's `len` bytes.
    PastEnd {
        format: Format,
        part: Part,
        end: u64,
        len: u64,
    },
    /// The boxes end at byte `end`, and the `len - end` bytes after them are too few for the
    /// header of another box.
    ShortTail { format: Format, end: u64, len: u64 },
    /// The stream runs to the end of the file without its closing part (JPEG's end-of-image
    /// marker, PNG's `IEND`).
    NoEnd { format: Format },
    /// A box the format needs is not there: a video's `moov` or `mdat`, a HEIF image's `meta`.
    Missing { format: Format, part: FourCc },
    /// From `offset` on, the file holds zeros where the next header should be: a writer that
    /// reserves the space first has not written it yet.
    ZeroFilled { format: Format, offset: u64 },
}

/// Why the structure cannot tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsure {
    /// The first bytes are not those of a JPEG, PNG, WebP or ISO-BMFF file (or the file is a
    /// JPEG-LS stream, whose entropy-coded data is stuffed differently and is not scanned).
    OtherFormat,
    /// An ISO-BMFF file whose brands name neither a video nor a HEIF image: its boxes span the
    /// file, but which box it needs to be done is not known.
    UnknownBrand(FourCc),
    /// At `offset` the structure breaks in a way that no truncation produces (a JPEG segment
    /// length below 2, a box size of 2 to 7, ...): a damaged file, not one being written.
    Malformed {
        format: Format,
        offset: u64,
        what: &'static str,
    },
}

/// Checks the first `len` bytes of the file at `path`, `len` being the size the caller saw (so
/// that the answer is about that snapshot). A file shorter than `len` is an
/// `UnexpectedEof` error: it shrank, and the caller should look again. The error does not carry
/// the path; the caller adds it.
pub fn check_file(path: &Path, len: u64) -> io::Result<Completeness> {
    check_reader(File::open(path)?, len)
}

/// Checks the first `len` bytes of `reader`, from its start; see [`check_file`].
pub fn check_reader<R: Read + Seek>(reader: R, len: u64) -> io::Result<Completeness> {
    let mut src = Source::new(reader, len);
    let mut head = [0u8; MAGIC_LEN];
    let n = usize::try_from(len.min(MAGIC_LEN as u64)).unwrap_or(MAGIC_LEN);
    src.read_exact_at(0, &mut head[..n])?;
    let Some(format) = sniff(&head[..n]) else {
        return Ok(Completeness::Unknown(Unsure::OtherFormat));
    };
    match format {
        Format::Jpeg => {
            // A JPEG check reads all of the entropy-coded data anyway, so read big.
            src.read_size = BUF_SIZE;
            jpeg(&mut src)
        }
        Format::Png => png(&mut src),
        Format::WebP => webp(&mut src),
        Format::Video | Format::Heif | Format::IsoBmff => iso_bmff(&mut src, format),
    }
}

/// The bytes [`sniff`] needs to tell every format apart.
pub const MAGIC_LEN: usize = 12;

/// The format that a file's first bytes (up to [`MAGIC_LEN`]) say, if it is one this module
/// checks. An ISO-BMFF file with `ftyp` is [`Format::IsoBmff`] here: its brands tell a video
/// from an image. A QuickTime file without `ftyp` (older cameras) is a [`Format::Video`].
pub fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(&[0xFF, SOI, 0xFF]) {
        return Some(Format::Jpeg);
    }
    if head.starts_with(PNG_SIGNATURE) {
        return Some(Format::Png);
    }
    if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        return Some(Format::WebP);
    }
    match head.get(4..8) {
        Some(b"ftyp") => Some(Format::IsoBmff),
        // Only the atoms such files start with; "free" or "skip" would also match text that
        // happens to have the word at offset 4.
        Some(b"moov" | b"mdat" | b"wide") => Some(Format::Video),
        _ => None,
    }
}

/// The most one read asks for, and so the most this module allocates.
const BUF_SIZE: usize = 64 * 1024;
/// What a header read asks for: a page, so that neighbouring headers come with it.
const HEADER_READ: usize = 4 * 1024;

/// Reads at offsets through one buffer, never past `len`.
struct Source<R> {
    inner: R,
    /// The length the caller saw; nothing past it is read.
    len: u64,
    /// How much a refill asks for.
    read_size: usize,
    /// The bytes from `start`; its capacity (at most `BUF_SIZE`) is allocated once.
    buf: Vec<u8>,
    start: u64,
    /// Where `inner` stands, when known, to skip a seek before a sequential read.
    inner_pos: Option<u64>,
}

impl<R: Read + Seek> Source<R> {
    fn new(inner: R, len: u64) -> Self {
        let cap = usize::try_from(len.min(BUF_SIZE as u64)).unwrap_or(BUF_SIZE);
        Source {
            inner,
            len,
            read_size: HEADER_READ,
            buf: Vec::with_capacity(cap),
            start: 0,
            inner_pos: None,
        }
    }

    /// The buffered bytes from `pos` on, at least `need` of them (fewer only where `len` comes
    /// first); empty at or past `len`. `need` is at most `BUF_SIZE`.
    fn window(&mut self, pos: u64, need: usize) -> io::Result<&[u8]> {
        if pos >= self.len {
            return Ok(&[]);
        }
        let rest = self.len - pos;
        let need = need.min(BUF_SIZE) as u64;
        let end = self.start + self.buf.len() as u64;
        let buffered = pos >= self.start && pos < end && (end - pos >= need.min(rest));
        if !buffered {
            self.refill(pos, need)?;
        }
        // In range: pos is within [start, start + buf.len()), which is at most BUF_SIZE long.
        let off = usize::try_from(pos - self.start).unwrap_or(usize::MAX);
        Ok(self.buf.get(off..).unwrap_or(&[]))
    }

    fn refill(&mut self, pos: u64, need: u64) -> io::Result<()> {
        let want = need.max(self.read_size as u64).min(BUF_SIZE as u64);
        let n = usize::try_from(want.min(self.len - pos)).unwrap_or(BUF_SIZE);
        if self.inner_pos != Some(pos) {
            self.inner_pos = None;
            self.inner.seek(SeekFrom::Start(pos))?;
        }
        self.buf.clear();
        self.buf.resize(n, 0);
        self.start = pos;
        let mut filled = 0;
        while filled < n {
            match self.inner.read(&mut self.buf[filled..]) {
                Ok(0) => {
                    self.buf.clear();
                    self.inner_pos = None;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the file ends at byte {}, before the {} bytes it had when it was \
                             looked at: it shrank, look again",
                            pos + filled as u64,
                            self.len
                        ),
                    ));
                }
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.clear();
                    self.inner_pos = None;
                    return Err(e);
                }
            }
        }
        self.inner_pos = Some(pos + n as u64);
        Ok(())
    }

    /// Fills `out` from `pos`; `false` (and nothing read) if `len` comes first.
    fn read_at(&mut self, pos: u64, out: &mut [u8]) -> io::Result<bool> {
        if self.len.saturating_sub(pos) < out.len() as u64 {
            return Ok(false);
        }
        let w = self.window(pos, out.len())?;
        match w.get(..out.len()) {
            Some(bytes) => {
                out.copy_from_slice(bytes);
                Ok(true)
            }
            // window() returns at least what was asked for when it is within len.
            None => Err(io::Error::other("short buffered read")),
        }
    }

    /// Like `read_at`, for bytes that the structure already showed to be within `len`.
    fn read_exact_at(&mut self, pos: u64, out: &mut [u8]) -> io::Result<()> {
        if self.read_at(pos, out)? {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the length being checked",
            ))
        }
    }

    fn byte_at(&mut self, pos: u64) -> io::Result<Option<u8>> {
        Ok(self.window(pos, 1)?.first().copied())
    }

    /// The offset of the first 0xFF at or after `pos`, if there is one before `len`.
    fn find_ff(&mut self, mut pos: u64) -> io::Result<Option<u64>> {
        loop {
            let w = self.window(pos, 1)?;
            if w.is_empty() {
                return Ok(None);
            }
            match w.iter().position(|&b| b == 0xFF) {
                Some(i) => return Ok(Some(pos + i as u64)),
                None => pos += w.len() as u64,
            }
        }
    }
}

// JPEG marker codes (the byte after 0xFF).
const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const TEM: u8 = 0x01;
const SOF55: u8 = 0xF7;

fn jpeg<R: Read + Seek>(src: &mut Source<R>) -> io::Result<Completeness> {
    const F: Format = Format::Jpeg;
    let no_end = Completeness::Incomplete(Why::NoEnd { format: F });
    let malformed = |offset, what| {
        Completeness::Unknown(Unsure::Malformed {
            format: F,
            offset,
            what,
        })
    };
    // From marker to marker, seeking over each segment by its length. The entropy-coded data
    // after SOS has no length, and needs no scanner of its own: in it every 0xFF is followed by
    // 0x00 (a stuffed data byte) or a restart marker, both of which the walk skips, so the search
    // for the next 0xFF passes over the data and stops at the first real marker after it.
    let mut pos = 2; // after SOI
    loop {
        let Some((code, after)) = next_marker(src, pos)? else {
            return Ok(no_end);
        };
        match code {
            EOI => return Ok(Completeness::Complete),
            SOI => {
                return Ok(malformed(
                    after - 2,
                    "a second start-of-image marker before the end of the first image",
                ))
            }
            // JPEG-LS scans stuff bits differently (0xFF then any byte below 0x80 is data).
            SOF55 => return Ok(Completeness::Unknown(Unsure::OtherFormat)),
            // A stuffed byte in a scan (outside one, junk that libjpeg skips too), and the
            // markers without a length: restarts (in a scan) and TEM.
            0x00 | TEM | 0xD0..=0xD7 => pos = after,
            _ => {
                let mut len_bytes = [0u8; 2];
                if !src.read_at(after, &mut len_bytes)? {
                    return Ok(no_end);
                }
                // The length counts itself but not the marker.
                let seg_len = u64::from(u16::from_be_bytes(len_bytes));
                if seg_len < 2 {
                    return Ok(malformed(after, "a segment length below 2"));
                }
                let end = after.saturating_add(seg_len);
                if end > src.len {
                    return Ok(Completeness::Incomplete(Why::PastEnd {
                        format: F,
                        part: Part::Segment(code),
                        end,
                        len: src.len,
                    }));
                }
                pos = end;
            }
        }
    }
}

/// The next marker from `pos` on: its code and the offset after the code. The bytes before the
/// 0xFF are skipped: a scan's entropy-coded data, or junk between segments (libjpeg skips it
/// too, with a warning; and a file whose reserved tail is still zeros must not stop the search).
/// So are 0xFF fill bytes before the code.
fn next_marker<R: Read + Seek>(src: &mut Source<R>, pos: u64) -> io::Result<Option<(u8, u64)>> {
    let Some(ff) = src.find_ff(pos)? else {
        return Ok(None);
    };
    let mut p = ff + 1;
    loop {
        match src.byte_at(p)? {
            None => return Ok(None),
            Some(0xFF) => p += 1,
            Some(code) => return Ok(Some((code, p + 1))),
        }
    }
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn png<R: Read + Seek>(src: &mut Source<R>) -> io::Result<Completeness> {
    const F: Format = Format::Png;
    let malformed = |offset, what| {
        Completeness::Unknown(Unsure::Malformed {
            format: F,
            offset,
            what,
        })
    };
    let mut pos = PNG_SIGNATURE.len() as u64;
    loop {
        let mut header = [0u8; 8];
        if !src.read_at(pos, &mut header)? {
            return Ok(Completeness::Incomplete(Why::NoEnd { format: F }));
        }
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = FourCc([header[4], header[5], header[6], header[7]]);
        if length == 0 && kind.0 == [0; 4] {
            return Ok(Completeness::Incomplete(Why::ZeroFilled {
                format: F,
                offset: pos,
            }));
        }
        if length > 0x7FFF_FFFF {
            return Ok(malformed(pos, "a chunk length above 2^31 - 1"));
        }
        if !kind.0.iter().all(u8::is_ascii_alphabetic) {
            return Ok(malformed(pos + 4, "a chunk type that is not four letters"));
        }
        // Length, type, data, CRC.
        let end = pos.saturating_add(12 + u64::from(length));
        if end > src.len {
            return Ok(Completeness::Incomplete(Why::PastEnd {
                format: F,
                part: Part::Chunk(kind),
                end,
                len: src.len,
            }));
        }
        if kind.0 == *b"IEND" {
            return Ok(Completeness::Complete);
        }
        pos = end;
    }
}

fn webp<R: Read + Seek>(src: &mut Source<R>) -> io::Result<Completeness> {
    const F: Format = Format::WebP;
    let malformed = |offset, what| {
        Completeness::Unknown(Unsure::Malformed {
            format: F,
            offset,
            what,
        })
    };
    let mut size = [0u8; 4];
    src.read_exact_at(4, &mut size)?;
    let riff_size = u64::from(u32::from_le_bytes(size));
    let riff_end = 8 + riff_size;
    if riff_end > src.len {
        return Ok(Completeness::Incomplete(Why::PastEnd {
            format: F,
            part: Part::Riff,
            end: riff_end,
            len: src.len,
        }));
    }
    if riff_size < 4 {
        return Ok(malformed(4, "a RIFF size too small for the form type"));
    }
    let mut has_image = false;
    let mut pos = 12;
    while pos < riff_end {
        if riff_end - pos < 8 {
            return Ok(malformed(pos, "chunks that do not fill the RIFF container"));
        }
        let mut header = [0u8; 8];
        src.read_exact_at(pos, &mut header)?;
        let size = u64::from(u32::from_le_bytes([
            header[4], header[5], header[6], header[7],
        ]));
        // Chunks are padded to an even size; some writers leave out the last chunk's pad byte.
        let end = pos + 8 + size;
        let padded = end + (size & 1);
        if end > riff_end {
            return Ok(malformed(pos, "a chunk that runs past the RIFF container"));
        }
        if matches!(&header[..4], b"VP8 " | b"VP8L" | b"ANMF") {
            has_image = true;
        }
        pos = padded;
    }
    if !has_image {
        return Ok(malformed(12, "no image chunk (VP8, VP8L or ANMF)"));
    }
    Ok(Completeness::Complete)
}

const FTYP: FourCc = FourCc(*b"ftyp");
const MOOV: FourCc = FourCc(*b"moov");
const MDAT: FourCc = FourCc(*b"mdat");
const META: FourCc = FourCc(*b"meta");
const UUID: FourCc = FourCc(*b"uuid");
/// How many compatible brands of `ftyp` are read; real files list a handful.
const MAX_COMPATIBLE_BRANDS: usize = 16;

fn iso_bmff<R: Read + Seek>(src: &mut Source<R>, mut format: Format) -> io::Result<Completeness> {
    let len = src.len;
    let mut brand = None;
    let (mut moov, mut mdat, mut meta) = (false, false, false);
    let mut pos = 0;
    while pos < len {
        let malformed = |what| {
            Completeness::Unknown(Unsure::Malformed {
                format,
                offset: pos,
                what,
            })
        };
        let short_tail = Completeness::Incomplete(Why::ShortTail {
            format,
            end: pos,
            len,
        });
        let rest = len - pos;
        let mut header = [0u8; 16];
        if !src.read_at(pos, &mut header[..8])? {
            return Ok(short_tail);
        }
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = FourCc([header[4], header[5], header[6], header[7]]);
        if kind.0 == [0; 4] {
            return Ok(Completeness::Incomplete(Why::ZeroFilled {
                format,
                offset: pos,
            }));
        }
        let (size, header_len) = match size32 {
            // The last box, to the end of the file.
            0 => (rest, 8),
            // A 64-bit size follows the type.
            1 => {
                if !src.read_at(pos + 8, &mut header[8..16])? {
                    return Ok(short_tail);
                }
                let large = u64::from_be_bytes([
                    header[8], header[9], header[10], header[11], header[12], header[13],
                    header[14], header[15],
                ]);
                if large < 16 {
                    return Ok(malformed("a 64-bit box size below its 16-byte header"));
                }
                (large, 16)
            }
            2..=7 => return Ok(malformed("a box size below its 8-byte header")),
            n => (u64::from(n), 8),
        };
        // A uuid box's 16-byte user type is part of its header: a last box (size 0) too short
        // for it is cut inside its header, any other is damaged.
        if kind == UUID && size < header_len + 16 {
            if size32 == 0 {
                return Ok(Completeness::Incomplete(Why::PastEnd {
                    format,
                    part: Part::Box(kind),
                    end: pos + header_len + 16,
                    len,
                }));
            }
            return Ok(malformed("a 'uuid' box too small for its user type"));
        }
        let end = pos.saturating_add(size);
        if end > len {
            return Ok(Completeness::Incomplete(Why::PastEnd {
                format,
                part: Part::Box(kind),
                end,
                len,
            }));
        }
        if pos == 0 && kind == FTYP {
            let Some((major, kind_of_file)) = brands(src, pos + header_len, size - header_len)?
            else {
                return Ok(malformed("an 'ftyp' box too small for its brands"));
            };
            brand = Some(major);
            format = kind_of_file;
        }
        match kind {
            MOOV => moov = true,
            MDAT => mdat = true,
            META => meta = true,
            _ => {}
        }
        pos = end;
    }
    let missing = |part| Ok(Completeness::Incomplete(Why::Missing { format, part }));
    match format {
        Format::Video if !moov => missing(MOOV),
        Format::Video if !mdat => missing(MDAT),
        Format::Heif if !meta => missing(META),
        Format::Video | Format::Heif => Ok(Completeness::Complete),
        _ => Ok(Completeness::Unknown(Unsure::UnknownBrand(
            brand.unwrap_or(FourCc([0; 4])),
        ))),
    }
}

/// The major brand of the `ftyp` payload at `pos`, and what the brands say the file is; `None`
/// if the payload is too small for a major brand and minor version.
fn brands<R: Read + Seek>(
    src: &mut Source<R>,
    pos: u64,
    payload: u64,
) -> io::Result<Option<(FourCc, Format)>> {
    let mut bytes = [0u8; 8 + 4 * MAX_COMPATIBLE_BRANDS];
    let n = usize::try_from(payload.min(bytes.len() as u64)).unwrap_or(bytes.len());
    if n < 8 {
        return Ok(None);
    }
    src.read_exact_at(pos, &mut bytes[..n])?;
    let major = FourCc([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if let Some(format) = brand_format(major) {
        return Ok(Some((major, format)));
    }
    // An unknown major brand: the compatible brands decide, when they agree.
    let (mut image, mut video) = (false, false);
    for b in bytes[8..n].chunks_exact(4) {
        match brand_format(FourCc([b[0], b[1], b[2], b[3]])) {
            Some(Format::Heif) => image = true,
            Some(_) => video = true,
            None => {}
        }
    }
    let format = match (image, video) {
        (true, false) => Format::Heif,
        (false, true) => Format::Video,
        _ => Format::IsoBmff,
    };
    Ok(Some((major, format)))
}

/// What a brand says about the file: a still image needs `meta`; a video, and an image
/// sequence, which has tracks, needs `moov`.
fn brand_format(brand: FourCc) -> Option<Format> {
    match &brand.0 {
        b"heic" | b"heix" | b"heim" | b"heis" | b"mif1" | b"mif2" | b"miaf" | b"avif" | b"avio"
        | b"avci" | b"vvic" | b"jpeg" => Some(Format::Heif),
        b"msf1" | b"hevc" | b"hevx" | b"hevm" | b"hevs" | b"avis" | b"mp41" | b"mp42" | b"avc1"
        | b"qt  " | b"M4V " | b"M4VH" | b"M4VP" | b"M4A " | b"MSNV" | b"XAVC" | b"mmp4"
        | b"f4v " => Some(Format::Video),
        // isom, iso2 to iso9; 3GPP and 3GPP2 (3gp4, 3g2a, 3ge6, ...).
        [b'i', b's', b'o', _] | [b'3', b'g', _, _] => Some(Format::Video),
        _ => None,
    }
}

impl fmt::Display for Completeness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Completeness::Complete => f.write_str("complete"),
            Completeness::Incomplete(why) => write!(f, "incomplete: {why}"),
            Completeness::Unknown(unsure) => write!(f, "cannot tell: {unsure}"),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::WebP => "WebP",
            Format::Video => "MP4/MOV",
            Format::Heif => "HEIF/AVIF",
            Format::IsoBmff => "ISO-BMFF",
        })
    }
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if b == b' ' || b.is_ascii_graphic() {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FourCc(\"{self}\")")
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Part::Segment(code) => match code {
                0xE0..=0xEF => write!(f, "segment APP{} (FF{code:02X})", code - 0xE0),
                0xC4 => f.write_str("segment DHT (FFC4)"),
                0xCC => f.write_str("segment DAC (FFCC)"),
                0xC0..=0xCF => write!(f, "segment SOF{} (FF{code:02X})", code - 0xC0),
                0xDA => f.write_str("segment SOS (FFDA)"),
                0xDB => f.write_str("segment DQT (FFDB)"),
                0xDD => f.write_str("segment DRI (FFDD)"),
                0xFE => f.write_str("segment COM (FFFE)"),
                _ => write!(f, "segment FF{code:02X}"),
            },
            Part::Chunk(kind) => write!(f, "chunk '{kind}'"),
            Part::Box(kind) => write!(f, "box '{kind}'"),
            Part::Riff => f.write_str("RIFF container"),
        }
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::PastEnd {
                format,
                part,
                end,
                len,
            } => write!(
                f,
                "{format}: {part} ends at byte {end} but the file has {len} bytes"
            ),
            Why::ShortTail { format, end, len } => write!(
                f,
                "{format}: the boxes end at byte {end} of {len}; the last {} bytes are too few \
                 for another box",
                len.saturating_sub(*end)
            ),
            Why::NoEnd {
                format: Format::Jpeg,
            } => f.write_str("JPEG: no end-of-image marker (FFD9)"),
            Why::NoEnd {
                format: Format::Png,
            } => f.write_str("PNG: no IEND chunk"),
            Why::NoEnd { format } => write!(f, "{format}: no end"),
            Why::Missing { format, part } if *part == MOOV => write!(
                f,
                "{format}: no 'moov' box (a camera that writes 'mdat' first adds 'moov' last)"
            ),
            Why::Missing { format, part } => write!(f, "{format}: no '{part}' box"),
            Why::ZeroFilled { format, offset } => write!(
                f,
                "{format}: zeros from byte {offset} where the next header should be (space \
                 reserved but not yet written)"
            ),
        }
    }
}

impl fmt::Display for Unsure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsure::OtherFormat => f.write_str("not a format whose structure is checked"),
            Unsure::UnknownBrand(brand) => write!(
                f,
                "ISO-BMFF brand '{brand}' names neither a video nor a HEIF image"
            ),
            Unsure::Malformed {
                format,
                offset,
                what,
            } => write!(f, "{format}: malformed at byte {offset}: {what}"),
        }
    }
}

#[cfg(test)]
mod tests;
