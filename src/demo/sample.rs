//! The sample library `demo` backs up when no folder is named: photos drawn and encoded as
//! real JPEGs on the spot (with the EXIF a camera writes: date, offset, make, model, size),
//! and a short real video shipped in the repository (`assets/demo/sample.mp4`, H.264 and
//! AAC, 3 s; see `assets/demo/README.md`).
//!
//! Each file's modification time is its capture time, as after a copy from a camera, so the
//! daemon's settle check (docs/ARCHITECTURE.md#watching) has nothing to wait for.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use immish_testserver::fixtures::Photo;

/// The video, as shipped.
pub const VIDEO: &[u8] = include_bytes!("../../assets/demo/sample.mp4");

/// One photo of the library.
struct Shot {
    /// Relative path under the folder.
    path: &'static str,
    /// EXIF `DateTimeOriginal`.
    taken: &'static str,
    /// EXIF `OffsetTimeOriginal`.
    offset: &'static str,
    /// Unix seconds of `taken` at `offset`, the file's mtime.
    unix: u64,
    make: &'static str,
    model: &'static str,
    /// Hue of the scene, 0..360.
    hue: f32,
}

const SHOTS: [Shot; 6] = [
    Shot {
        path: "2019-07 Lake/IMG_0001.jpg",
        taken: "2019:07:04 18:30:00",
        offset: "+02:00",
        unix: 1_562_257_800,
        make: "Canon",
        model: "EOS R",
        hue: 205.0,
    },
    Shot {
        path: "2019-07 Lake/IMG_0002.jpg",
        taken: "2019:07:04 18:31:12",
        offset: "+02:00",
        unix: 1_562_257_872,
        make: "Canon",
        model: "EOS R",
        hue: 30.0,
    },
    Shot {
        path: "2021-12 Snow/PXL_20211224_101500.jpg",
        taken: "2021:12:24 10:15:00",
        offset: "+01:00",
        unix: 1_640_337_300,
        make: "Google",
        model: "Pixel 6",
        hue: 190.0,
    },
    Shot {
        path: "2021-12 Snow/PXL_20211224_101642.jpg",
        taken: "2021:12:24 10:16:42",
        offset: "+01:00",
        unix: 1_640_337_402,
        make: "Google",
        model: "Pixel 6",
        hue: 260.0,
    },
    Shot {
        path: "2024-05 Garden/DSC01234.jpg",
        taken: "2024:05:11 09:05:30",
        offset: "-04:00",
        unix: 1_715_432_730,
        make: "SONY",
        model: "ILCE-7M3",
        hue: 110.0,
    },
    Shot {
        path: "2024-05 Garden/DSC01235.jpg",
        taken: "2024:05:11 09:06:02",
        offset: "-04:00",
        unix: 1_715_432_762,
        make: "SONY",
        model: "ILCE-7M3",
        hue: 330.0,
    },
];

/// The video's place in the library and its capture time (its `creation_time`).
const VIDEO_PATH: &str = "2019-07 Lake/VID_0003.mp4";
const VIDEO_UNIX: u64 = 1_562_257_800;

/// Frame size of the photos.
const WIDTH: u16 = 640;
const HEIGHT: u16 = 480;

/// Writes the library under `dir` (which exists) and returns the files written, photos
/// first, the video last.
pub fn write(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for shot in &SHOTS {
        let bytes = photo(shot).map_err(std::io::Error::other)?;
        let path = dir.join(shot.path);
        put(&path, &bytes, shot.unix)?;
        written.push(path);
    }
    let path = dir.join(VIDEO_PATH);
    put(&path, VIDEO, VIDEO_UNIX)?;
    written.push(path);
    Ok(written)
}

/// How many files [`write`] writes: photos, videos.
pub const fn counts() -> (usize, usize) {
    (SHOTS.len(), 1)
}

/// Writes `bytes` to `path` (creating its folder) with `unix` as its modification time.
fn put(path: &Path, bytes: &[u8], unix: u64) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(unix))?;
    f.sync_all()
}

/// One photo: a drawn scene (sky, sun, hills) in the shot's hue, baseline JPEG at quality
/// 85, with the shot's EXIF.
fn photo(shot: &Shot) -> Result<Vec<u8>, jpeg_encoder::EncodingError> {
    let (w, h) = (usize::from(WIDTH), usize::from(HEIGHT));
    let mut rgb = Vec::with_capacity(w * h * 3);
    let sun = (w as f32 * 0.7, h as f32 * 0.3, h as f32 * 0.09);
    for y in 0..h {
        let fy = y as f32 / h as f32;
        for x in 0..w {
            let fx = x as f32 / w as f32;
            let ridge = 0.62 + 0.08 * (fx * 9.0 + shot.hue / 40.0).sin() + 0.04 * (fx * 23.0).cos();
            let (dx, dy) = (x as f32 - sun.0, y as f32 - sun.1);
            let (hue, sat, light) = if fy > ridge {
                // Hills, darker towards the bottom.
                (shot.hue + 120.0, 0.45, 0.35 - 0.2 * (fy - ridge))
            } else if dx * dx + dy * dy < sun.2 * sun.2 {
                (50.0, 0.9, 0.75)
            } else {
                // Sky, lighter towards the horizon.
                (shot.hue, 0.55, 0.35 + 0.4 * fy)
            };
            rgb.extend_from_slice(&hsl(hue, sat, light));
        }
    }
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 85);
    encoder.add_exif_metadata(&exif(shot))?;
    encoder.encode(&rgb, WIDTH, HEIGHT, jpeg_encoder::ColorType::Rgb)?;
    Ok(out)
}

/// The shot's EXIF block (the TIFF structure after `Exif\0\0`), as laid out by the test
/// server's fixture writer: the same bytes its metadata job is tested against.
fn exif(shot: &Shot) -> Vec<u8> {
    let jpeg = Photo::new(shot.path)
        .taken(shot.taken, Some(shot.offset))
        .camera(shot.make, shot.model)
        .size(WIDTH, HEIGHT)
        .jpeg();
    app1_payload(&jpeg)
        .and_then(|p| p.strip_prefix(b"Exif\0\0"))
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// The payload of the first APP1 segment of a JPEG, if it has one before its image data.
fn app1_payload(jpeg: &[u8]) -> Option<&[u8]> {
    let mut at = 2;
    while at + 4 <= jpeg.len() && jpeg[at] == 0xFF {
        let marker = jpeg[at + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        let payload = jpeg.get(at + 4..at + 2 + len)?;
        if marker == 0xE1 {
            return Some(payload);
        }
        if marker == 0xDA {
            return None;
        }
        at += 2 + len;
    }
    None
}

/// HSL (degrees, 0..1, 0..1) to RGB bytes.
fn hsl(hue: f32, sat: f32, light: f32) -> [u8; 3] {
    let light = light.clamp(0.0, 1.0);
    let c = (1.0 - (2.0 * light - 1.0).abs()) * sat;
    let h = hue.rem_euclid(360.0) / 60.0;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = light - c / 2.0;
    let byte = |v: f32| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    [byte(r), byte(g), byte(b)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The photos are whole JPEGs by the daemon's own check, differ from each other, and
    /// carry their EXIF date where a reader looks for it.
    #[test]
    fn the_library_is_complete_distinct_media_with_exif_dates() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path()).unwrap();
        assert_eq!(files.len(), SHOTS.len() + 1);
        let mut sums = std::collections::HashSet::new();
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            let len = bytes.len() as u64;
            assert_eq!(
                crate::complete::check_file(f, len).unwrap(),
                crate::complete::Completeness::Complete,
                "{}",
                f.display()
            );
            assert!(sums.insert(bytes.clone()), "{} is unique", f.display());
        }
        for (shot, f) in SHOTS.iter().zip(&files) {
            let bytes = std::fs::read(f).unwrap();
            let exif = app1_payload(&bytes).expect("an APP1 segment");
            let needle = shot.taken.as_bytes();
            assert!(
                exif.windows(needle.len()).any(|w| w == needle),
                "{} carries {}",
                f.display(),
                shot.taken
            );
            let mtime = std::fs::metadata(f).unwrap().modified().unwrap();
            assert_eq!(
                mtime,
                SystemTime::UNIX_EPOCH + Duration::from_secs(shot.unix)
            );
        }
    }
}
