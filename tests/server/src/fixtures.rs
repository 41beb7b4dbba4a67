//! Media files for tests: a JPEG with the EXIF tags the metadata job reads, an XMP sidecar, and
//! a tiny MP4. The bytes are laid out by hand here (not written by any EXIF library), so a
//! reader that gets them right agrees with the format, not with a writer.
//!
//! ```
//! use immish_testserver::fixtures::{xmp_sidecar, Photo};
//! let jpeg = Photo::new("IMG_0001")
//!     .taken("2019:07:04 18:30:00", Some("+02:00"))
//!     .camera("Canon", "EOS R5")
//!     .size(4000, 3000)
//!     .jpeg();
//! let xmp = xmp_sidecar(Some("at the lake"), None);
//! assert!(jpeg.starts_with(&[0xFF, 0xD8]) && xmp.contains("dc:description"));
//! ```

/// A rational as (numerator, denominator).
type Rational = (u32, u32);

/// `ExposureTime`, `FNumber`, ISO, `FocalLength`.
type Exposure = (Rational, Rational, u16, Rational);

/// A JPEG to build. Every field is optional; [`Photo::new`]'s tag makes the bytes unique.
#[derive(Clone, Debug, Default)]
pub struct Photo {
    tag: String,
    date_time_original: Option<String>,
    offset_time_original: Option<String>,
    subsec: Option<String>,
    make: Option<String>,
    model: Option<String>,
    lens: Option<String>,
    description: Option<String>,
    orientation: Option<u16>,
    size: Option<(u16, u16)>,
    exposure: Option<Exposure>,
    padding: usize,
}

impl Photo {
    /// A photo whose bytes carry `tag` in a comment, so that two photos with different tags
    /// have different checksums.
    pub fn new(tag: impl Into<String>) -> Photo {
        Photo {
            tag: tag.into(),
            padding: 1024,
            ..Photo::default()
        }
    }

    /// EXIF `DateTimeOriginal` (`"YYYY:MM:DD HH:MM:SS"`) and `OffsetTimeOriginal` (`"+02:00"`).
    pub fn taken(mut self, date_time: &str, offset: Option<&str>) -> Photo {
        self.date_time_original = Some(date_time.to_string());
        self.offset_time_original = offset.map(str::to_string);
        self
    }

    /// EXIF `SubSecTimeOriginal` (digits, e.g. `"250"` for .250 s).
    pub fn subsec(mut self, digits: &str) -> Photo {
        self.subsec = Some(digits.to_string());
        self
    }

    pub fn camera(mut self, make: &str, model: &str) -> Photo {
        self.make = Some(make.to_string());
        self.model = Some(model.to_string());
        self
    }

    pub fn lens(mut self, model: &str) -> Photo {
        self.lens = Some(model.to_string());
        self
    }

    /// EXIF `ImageDescription`.
    pub fn description(mut self, text: &str) -> Photo {
        self.description = Some(text.to_string());
        self
    }

    /// EXIF `Orientation` (1..=8; 5 to 8 are sideways).
    pub fn orientation(mut self, value: u16) -> Photo {
        self.orientation = Some(value);
        self
    }

    /// The frame size (a baseline start-of-frame header) and EXIF `PixelX/YDimension`.
    pub fn size(mut self, width: u16, height: u16) -> Photo {
        self.size = Some((width, height));
        self
    }

    /// `ExposureTime`, `FNumber`, ISO and `FocalLength` (rationals as (numerator, denominator)).
    pub fn exposure(
        mut self,
        time: (u32, u32),
        f_number: (u32, u32),
        iso: u16,
        focal_length: (u32, u32),
    ) -> Photo {
        self.exposure = Some((time, f_number, iso, focal_length));
        self
    }

    /// Filler bytes after the headers, for a file of some size (default 1 KiB).
    pub fn padding(mut self, bytes: usize) -> Photo {
        self.padding = bytes;
        self
    }

    fn has_exif(&self) -> bool {
        self.date_time_original.is_some()
            || self.make.is_some()
            || self.model.is_some()
            || self.lens.is_some()
            || self.description.is_some()
            || self.orientation.is_some()
            || self.size.is_some()
            || self.exposure.is_some()
    }

    /// The JPEG: SOI, APP1 `Exif` (when any tag is set), a start-of-frame header (with
    /// [`Photo::size`]), a comment carrying the tag, filler, EOI.
    pub fn jpeg(&self) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8];
        if self.has_exif() {
            let mut app1 = b"Exif\0\0".to_vec();
            app1.extend_from_slice(&self.tiff());
            segment(&mut out, 0xE1, &app1);
        }
        if let Some((w, h)) = self.size {
            // Baseline SOF0: precision 8, height, width, three components.
            let mut sof = vec![8];
            sof.extend_from_slice(&h.to_be_bytes());
            sof.extend_from_slice(&w.to_be_bytes());
            sof.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
            segment(&mut out, 0xC0, &sof);
        }
        segment(
            &mut out,
            0xFE,
            format!("immish-testserver fixture {}", self.tag).as_bytes(),
        );
        out.extend(std::iter::repeat_n(0x5A, self.padding));
        out.extend_from_slice(&[0xFF, 0xD9]);
        out
    }

    /// The EXIF block: little-endian TIFF with IFD0 and the Exif IFD.
    fn tiff(&self) -> Vec<u8> {
        let mut ifd0 = Vec::new();
        if let Some(d) = &self.description {
            ifd0.push(Entry::ascii(0x010E, d));
        }
        if let Some(m) = &self.make {
            ifd0.push(Entry::ascii(0x010F, m));
        }
        if let Some(m) = &self.model {
            ifd0.push(Entry::ascii(0x0110, m));
        }
        if let Some(o) = self.orientation {
            ifd0.push(Entry::short(0x0112, o));
        }
        let mut exif = Vec::new();
        if let Some((time, f, iso, focal)) = self.exposure {
            exif.push(Entry::rational(0x829A, time));
            exif.push(Entry::rational(0x829D, f));
            exif.push(Entry::short(0x8827, iso));
            exif.push(Entry::rational(0x920A, focal));
        }
        if let Some(d) = &self.date_time_original {
            exif.push(Entry::ascii(0x9003, d));
        }
        if let Some(o) = &self.offset_time_original {
            exif.push(Entry::ascii(0x9011, o));
        }
        if let Some(s) = &self.subsec {
            exif.push(Entry::ascii(0x9291, s));
        }
        if let Some((w, h)) = self.size {
            exif.push(Entry::long(0xA002, u32::from(w)));
            exif.push(Entry::long(0xA003, u32::from(h)));
        }
        if let Some(l) = &self.lens {
            exif.push(Entry::ascii(0xA434, l));
        }

        // Layout: header (8), IFD0, its data, the Exif IFD, its data.
        let ifd0_len = |n: usize| 2 + 12 * n + 4;
        let n0 = ifd0.len() + usize::from(!exif.is_empty());
        let ifd0_data: usize = ifd0.iter().map(Entry::data_len).sum();
        let exif_offset = 8 + ifd0_len(n0) + ifd0_data;
        if !exif.is_empty() {
            ifd0.push(Entry::long(0x8769, exif_offset as u32));
        }
        ifd0.sort_by_key(|e| e.tag);
        exif.sort_by_key(|e| e.tag);

        let mut out = b"II*\0".to_vec();
        out.extend_from_slice(&8u32.to_le_bytes());
        write_ifd(&mut out, &ifd0);
        if !exif.is_empty() {
            debug_assert_eq!(out.len(), exif_offset);
            write_ifd(&mut out, &exif);
        }
        out
    }
}

fn segment(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
}

struct Entry {
    tag: u16,
    kind: u16,
    count: u32,
    bytes: Vec<u8>,
}

impl Entry {
    fn ascii(tag: u16, s: &str) -> Entry {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        Entry {
            tag,
            kind: 2,
            count: bytes.len() as u32,
            bytes,
        }
    }

    fn short(tag: u16, v: u16) -> Entry {
        Entry {
            tag,
            kind: 3,
            count: 1,
            bytes: v.to_le_bytes().to_vec(),
        }
    }

    fn long(tag: u16, v: u32) -> Entry {
        Entry {
            tag,
            kind: 4,
            count: 1,
            bytes: v.to_le_bytes().to_vec(),
        }
    }

    fn rational(tag: u16, (num, den): (u32, u32)) -> Entry {
        let mut bytes = num.to_le_bytes().to_vec();
        bytes.extend_from_slice(&den.to_le_bytes());
        Entry {
            tag,
            kind: 5,
            count: 1,
            bytes,
        }
    }

    /// Bytes stored outside the entry (values over 4 bytes), padded to an even length.
    fn data_len(&self) -> usize {
        if self.bytes.len() > 4 {
            self.bytes.len() + self.bytes.len() % 2
        } else {
            0
        }
    }
}

/// Writes an IFD at the end of `out`, its out-of-line values right after it.
fn write_ifd(out: &mut Vec<u8>, entries: &[Entry]) {
    let start = out.len();
    let mut data_at = start + 2 + 12 * entries.len() + 4;
    let mut data = Vec::new();
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.kind.to_le_bytes());
        out.extend_from_slice(&e.count.to_le_bytes());
        if e.bytes.len() <= 4 {
            let mut inline = e.bytes.clone();
            inline.resize(4, 0);
            out.extend_from_slice(&inline);
        } else {
            out.extend_from_slice(&(data_at as u32).to_le_bytes());
            data.extend_from_slice(&e.bytes);
            if e.bytes.len() % 2 == 1 {
                data.push(0);
            }
            data_at += e.data_len();
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&data);
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An XMP sidecar as Lightroom or digiKam writes it: `dc:description` as an `rdf:Alt` with an
/// `x-default` entry, and `exif:DateTimeOriginal` (ISO 8601, e.g.
/// `"2019-07-04T18:30:00+02:00"`). Text is XML-escaped.
pub fn xmp_sidecar(description: Option<&str>, date_time_original: Option<&str>) -> String {
    let mut props = String::new();
    if let Some(d) = date_time_original {
        props.push_str(&format!(
            "   <exif:DateTimeOriginal>{}</exif:DateTimeOriginal>\n",
            xml_escape(d)
        ));
    }
    if let Some(d) = description {
        props.push_str(&format!(
            "   <dc:description>\n    <rdf:Alt>\n     \
             <rdf:li xml:lang=\"x-default\">{}</rdf:li>\n    </rdf:Alt>\n   </dc:description>\n",
            xml_escape(d)
        ));
    }
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
         <x:xmpmeta xmlns:x=\"adobe:ns:meta/\" x:xmptk=\"XMP Core 6.0.0\">\n \
         <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n  \
         <rdf:Description rdf:about=\"\"\n    \
         xmlns:dc=\"http://purl.org/dc/elements/1.1/\"\n    \
         xmlns:exif=\"http://ns.adobe.com/exif/1.0/\">\n{props}  </rdf:Description>\n \
         </rdf:RDF>\n</x:xmpmeta>\n<?xpacket end=\"w\"?>\n"
    )
}

/// A tiny MP4 (`ftyp` and `mdat` boxes) carrying `tag`, so that videos differ.
pub fn mp4(tag: &str) -> Vec<u8> {
    let mut v = Vec::new();
    let ftyp: &[u8] = b"ftypisom\x00\x00\x02\x00isomiso2avc1mp41";
    v.extend_from_slice(&((ftyp.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(ftyp);
    let payload = format!("immish-testserver fixture video {tag}");
    v.extend_from_slice(&((payload.len() + 8) as u32).to_be_bytes());
    v.extend_from_slice(b"mdat");
    v.extend_from_slice(payload.as_bytes());
    v
}
