//! Album names for a file (docs/ARCHITECTURE.md#library), and the choice among the user's
//! albums of one name.
//!
//! Must not: touch the database or the network.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::api::Album;
use crate::config::{AlbumMode, LibraryConfig};

/// The albums a file at `path` under `root` joins: its folder's album (by `album`), and the
/// root's fixed `album_name`, both when both are set. A file directly in the root takes the
/// root folder's own name.
pub fn album_names(cfg: &LibraryConfig, root: &[u8], path: &[u8]) -> Vec<String> {
    let (root, path) = (
        Path::new(OsStr::from_bytes(root)),
        Path::new(OsStr::from_bytes(path)),
    );
    let lossy = |s: &OsStr| String::from_utf8_lossy(s.as_bytes()).into_owned();
    let root_name = root.file_name().map(lossy).unwrap_or_else(|| "/".into());
    let folder = path
        .parent()
        .and_then(|p| p.strip_prefix(root).ok())
        .map(|rel| rel.iter().map(lossy).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut names = Vec::new();
    match cfg.album {
        AlbumMode::None => {}
        AlbumMode::Folder => names.push(folder.last().cloned().unwrap_or(root_name)),
        AlbumMode::Path if folder.is_empty() => names.push(root_name),
        AlbumMode::Path => names.push(folder.join(&cfg.album_separator)),
    }
    if let Some(fixed) = &cfg.album_name {
        if !names.contains(fixed) {
            names.push(fixed.clone());
        }
    }
    names
}

/// The album to use among several of the same name: the oldest (`createdAt`), then the
/// smallest id, so that every run and every machine picks the same one.
pub fn choose<'a>(name: &str, albums: &'a [Album]) -> (Option<&'a Album>, usize) {
    let same: Vec<&Album> = albums.iter().filter(|a| a.name == name).collect();
    let chosen = same
        .iter()
        .min_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)))
        .copied();
    (chosen, same.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StackPrimary;

    fn cfg(album: AlbumMode, name: Option<&str>) -> LibraryConfig {
        LibraryConfig {
            album,
            album_separator: " / ".into(),
            album_name: name.map(str::to_owned),
            stacks: true,
            stack_primary: StackPrimary::Jpeg,
        }
    }

    #[test]
    fn folder_path_and_fixed_names() {
        let (root, deep, top) = (
            b"/srv/Photos".as_slice(),
            b"/srv/Photos/2024/Summer/a.jpg".as_slice(),
            b"/srv/Photos/a.jpg".as_slice(),
        );
        assert!(album_names(&cfg(AlbumMode::None, None), root, deep).is_empty());
        assert_eq!(
            album_names(&cfg(AlbumMode::Folder, None), root, deep),
            ["Summer"]
        );
        assert_eq!(
            album_names(&cfg(AlbumMode::Path, None), root, deep),
            ["2024 / Summer"]
        );
        assert_eq!(
            album_names(&cfg(AlbumMode::Folder, None), root, top),
            ["Photos"]
        );
        assert_eq!(
            album_names(&cfg(AlbumMode::Path, None), root, top),
            ["Photos"]
        );
        assert_eq!(
            album_names(&cfg(AlbumMode::Folder, Some("Phone")), root, deep),
            ["Summer", "Phone"]
        );
        assert_eq!(
            album_names(&cfg(AlbumMode::None, Some("Phone")), root, deep),
            ["Phone"]
        );
        assert_eq!(
            album_names(&cfg(AlbumMode::Folder, Some("Summer")), root, deep),
            ["Summer"]
        );
        // A name that is not UTF-8 still makes an album.
        assert_eq!(
            album_names(
                &cfg(AlbumMode::Folder, None),
                root,
                b"/srv/Photos/f\xffo/a.jpg"
            ),
            ["f\u{fffd}o"]
        );
    }

    #[test]
    fn the_oldest_album_of_a_name_wins() {
        let a = |id: &str, name: &str, at: &str| Album {
            id: id.into(),
            name: name.into(),
            created_at: at.into(),
        };
        let all = vec![
            a("b", "Summer", "2024-01-02T00:00:00.000Z"),
            a("c", "Summer", "2024-01-01T00:00:00.000Z"),
            a("a", "Summer", "2024-01-01T00:00:00.000Z"),
            a("d", "Winter", "2020-01-01T00:00:00.000Z"),
        ];
        let (chosen, n) = choose("Summer", &all);
        assert_eq!((chosen.map(|a| a.id.as_str()), n), (Some("a"), 3));
        assert_eq!(choose("Autumn", &all), (None, 0));
    }
}
