//! Which entries under a root are looked at: the one decision the scanner's walk, the
//! watcher's event filter and the watcher's walks all make through [`Filter::skip`]
//! (docs/ARCHITECTURE.md#filters).
//!
//! Owns: temporary names, hidden names, the built-in junk list ([`JUNK`], `skip_junk`,
//! `junk_extra`), the root's `exclude` patterns and the `.immishignore` files of its folders
//! (both with gitignore semantics, [`Rules`]), folders holding `.nomedia`, `include`, and the
//! media types. Which `exclude` pattern matched is told to the caller, so that a scan can
//! report a pattern that matched nothing.
//!
//! Must not: walk folders, queue anything, or write the catalogue. Reading a folder's
//! `.immishignore` and looking for its `.nomedia` are the only I/O here, and only the
//! callers on the blocking pool ask for them ([`Filter::levels_to`], [`Filter::level`]).

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::model::MediaTypes;

/// Skipped by default (`skip_junk = true`), matched like gitignore lines without a slash:
/// against an entry's name at any depth, files and folders alike, case-insensitively.
/// NAS thumbnail and recycle folders, desktop metadata, trash folders.
pub const JUNK: &[&str] = &[
    "@eaDir",
    "#recycle",
    "#snapshot",
    ".@__thumb",
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    "._*",
    ".Trash-*",
    "$RECYCLE.BIN",
    "lost+found",
    ".thumbnails",
];

/// A folder holding a file of this name is skipped with everything below it (Android's
/// convention for "no media here").
pub const NOMEDIA: &str = ".nomedia";
/// A file of this name holds gitignore lines for its folder and everything below it.
pub const IGNORE_FILE: &str = ".immishignore";
/// An `.immishignore` larger than this is read no further (the rest is ignored, with a
/// warning).
const IGNORE_FILE_MAX: u64 = 1 << 20;
/// `.immishignore` files remembered for the watcher's lookups; beyond it the cache starts
/// over.
const CACHE_MAX: usize = 4096;

/// Why an entry is not looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A name copy tools use while writing (`*.part`, Syncthing, rsync).
    Temp,
    /// A dot name and `hidden = false`.
    Hidden,
    /// On the junk list (built in, or `junk_extra`).
    Junk,
    /// The root's `exclude` pattern with this index matched.
    Excluded(usize),
    /// An `.immishignore` line matched.
    Ignored,
    /// Its folder, or a folder above it, holds `.nomedia`.
    NoMedia,
    /// Not matched by `include`.
    NotIncluded,
    /// Not a media type the server takes.
    NotMedia,
}

impl Skip {
    /// Counted in the scan summary as skipped by junk or ignore rules (the others are not
    /// counted: a temporary, hidden or non-media file is simply not a candidate).
    pub fn counts_as_ignored(self) -> bool {
        matches!(self, Skip::Excluded(_) | Skip::Ignored | Skip::NoMedia)
    }
}

/// What kind of entry is asked about.
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    /// A folder: entered unless skipped.
    Dir,
    /// A regular file: a candidate unless skipped, so `include` and the media types count.
    File(&'a MediaTypes),
    /// A symlink, FIFO, socket or device: only its name is looked at (counted as skipped
    /// when its name would have been taken).
    Other,
}

/// Lines with gitignore semantics, relative to one folder (`base`): `#` comments, `!`
/// re-includes, a trailing `/` matches folders only, a slash at the start or in the middle
/// anchors the pattern to `base`, otherwise it matches a name at any depth; `*` and `?` do
/// not cross `/`, `**` does. The last matching line decides.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    set: GlobSet,
    lines: Vec<Line>,
}

#[derive(Clone, Debug)]
struct Line {
    /// As written, for reports.
    pattern: String,
    negated: bool,
    dir_only: bool,
}

impl Rules {
    /// Compiles `patterns` (one gitignore line each). `Err` names the bad pattern.
    pub fn new(patterns: &[String]) -> Result<Rules, String> {
        Self::compile(patterns.iter().map(|p| p.as_str()), false)
    }

    /// Like [`Rules::new`], case-insensitively (the junk list).
    fn new_nocase(patterns: impl Iterator<Item = String>) -> Result<Rules, String> {
        let v: Vec<String> = patterns.collect();
        Self::compile(v.iter().map(|p| p.as_str()), true)
    }

    /// The lines of an `.immishignore`. A line that does not compile is left out and
    /// reported as `line N: ...`, so one typo does not drop the rest of the file.
    pub fn parse(text: &str) -> (Rules, Vec<String>) {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if let Err(e) = Self::compile(std::iter::once(line), false) {
                bad.push(format!("line {}: {e}", i + 1));
            } else {
                good.push(line);
            }
        }
        let rules = Self::compile(good.into_iter(), false).unwrap_or_default();
        (rules, bad)
    }

    fn compile<'a>(lines: impl Iterator<Item = &'a str>, nocase: bool) -> Result<Rules, String> {
        let mut b = GlobSetBuilder::new();
        let mut out = Vec::new();
        for raw in lines {
            let Some((glob, line)) = parse_line(raw) else {
                continue;
            };
            let g = GlobBuilder::new(&glob)
                .literal_separator(true)
                .backslash_escape(true)
                .case_insensitive(nocase)
                .build()
                .map_err(|e| format!("invalid glob {raw:?}: {}", e.kind()))?;
            b.add(g);
            out.push(line);
        }
        Ok(Rules {
            set: b.build().map_err(|e| e.to_string())?,
            lines: out,
        })
    }

    /// The line that decides for `rel` (relative to the rules' folder; a folder when
    /// `is_dir`): its index and whether it ignores (`false`: re-includes). `None`: no line
    /// matched.
    pub fn decide(&self, rel: &Path, is_dir: bool) -> Option<(usize, bool)> {
        if self.lines.is_empty() {
            return None;
        }
        let cand = Candidate::new(rel);
        self.set
            .matches_candidate(&cand)
            .into_iter()
            .rev()
            .find(|&i| is_dir || !self.lines[i].dir_only)
            .map(|i| (i, !self.lines[i].negated))
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The pattern of line `i` as written.
    pub fn pattern(&self, i: usize) -> &str {
        &self.lines[i].pattern
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }
}

/// One gitignore line as a glob relative to its folder, or `None` for a blank line or a
/// comment.
fn parse_line(raw: &str) -> Option<(String, Line)> {
    let raw = raw.strip_suffix('\r').unwrap_or(raw);
    // Trailing spaces are dropped unless escaped with a backslash.
    let mut s = raw.trim_end_matches(' ').to_string();
    if s.ends_with('\\') && raw.len() > s.len() {
        s.push(' ');
    }
    if s.is_empty() || s.starts_with('#') {
        return None;
    }
    let mut negated = false;
    if let Some(rest) = s.strip_prefix('!') {
        negated = true;
        s = rest.to_string();
    } else if s.starts_with("\\!") || s.starts_with("\\#") {
        s.remove(0);
    }
    let dir_only = s.ends_with('/') && s.len() > 1;
    if dir_only {
        s.pop();
    }
    if s.is_empty() || s == "/" {
        return None;
    }
    // A slash at the start or in the middle anchors the pattern to its folder.
    let anchored = s.contains('/');
    let body = s.strip_prefix('/').unwrap_or(&s);
    let glob = if anchored || body.starts_with("**/") {
        body.to_string()
    } else {
        format!("**/{body}")
    };
    Some((
        glob,
        Line {
            pattern: raw.trim_end().to_string(),
            negated,
            dir_only,
        },
    ))
}

/// The `.immishignore` of one folder.
#[derive(Debug)]
pub struct Level {
    pub dir: PathBuf,
    pub rules: Arc<Rules>,
}

/// The ignore files that apply in one folder, from the root's down to its own.
pub type Levels = Arc<Vec<Arc<Level>>>;

/// What a folder on disk says about itself.
pub enum DirLook {
    /// It holds `.nomedia`.
    NoMedia,
    /// Walk it with these levels (the parent's, plus its own `.immishignore` if any).
    Walk(Levels),
}

/// The file stat that tells an `.immishignore` changed.
type FileKey = (u64, u64, u64, i64, i64);
/// Per folder: the stat its `.immishignore` had when read, and its rules.
type IgnoreCache = Arc<Mutex<HashMap<PathBuf, (FileKey, Arc<Rules>)>>>;

/// A root's filters, compiled once; the watcher's cache of `.immishignore` files. Cheap to
/// clone (the cache is shared).
#[derive(Clone, Debug)]
pub struct Filter {
    root: PathBuf,
    hidden: bool,
    junk: Option<Rules>,
    exclude: Rules,
    include: Option<GlobSet>,
    cache: IgnoreCache,
}

/// The settings of one root a [`Filter`] is built from.
pub struct FilterConfig<'a> {
    pub root: &'a Path,
    pub hidden: bool,
    pub skip_junk: bool,
    pub junk_extra: &'a [String],
    pub include: &'a [String],
    pub exclude: &'a [String],
}

impl Filter {
    /// Compiles a root's filters. `Err` names the bad pattern (the config was validated
    /// already, so this is not expected).
    pub fn new(cfg: &FilterConfig<'_>) -> Result<Filter, String> {
        let junk = if cfg.skip_junk {
            Some(Rules::new_nocase(
                JUNK.iter()
                    // Names, not lines: `#recycle` is no comment.
                    .map(|s| {
                        if s.starts_with('#') {
                            format!("\\{s}")
                        } else {
                            s.to_string()
                        }
                    })
                    .chain(cfg.junk_extra.iter().cloned()),
            )?)
        } else {
            None
        };
        let include = if cfg.include.is_empty() {
            None
        } else {
            let mut b = GlobSetBuilder::new();
            for g in cfg.include {
                b.add(globset::Glob::new(g).map_err(|e| format!("glob {g:?}: {e}"))?);
            }
            Some(b.build().map_err(|e| e.to_string())?)
        };
        Ok(Filter {
            root: cfg.root.to_path_buf(),
            hidden: cfg.hidden,
            junk,
            exclude: Rules::new(cfg.exclude)?,
            include,
            cache: Arc::default(),
        })
    }

    /// The root's `exclude` rules (for reports of patterns that matched nothing).
    pub fn exclude(&self) -> &Rules {
        &self.exclude
    }

    /// THE decision: why the entry at `path` (a folder when `is_dir`) is not looked at, or
    /// `None` when it is (a file is then a candidate, a folder is entered). `levels` are the
    /// `.immishignore` files that apply in its folder ([`Filter::levels_to`]; empty for a
    /// check by the path alone). Whether its own folder holds `.nomedia` is the caller's
    /// [`Filter::look_dir`].
    ///
    /// Order: temporary, junk (before hidden, so `.DS_Store` counts as junk), hidden, the
    /// root's `exclude`, the `.immishignore` files (the deepest that has a matching line
    /// decides), then for files `include` and the media type.
    pub fn skip(&self, path: &Path, entry: Entry<'_>, levels: &[Arc<Level>]) -> Option<Skip> {
        let is_dir = matches!(entry, Entry::Dir);
        let name = path.file_name()?.as_bytes();
        if is_temp_name(name) {
            return Some(Skip::Temp);
        }
        if let Some(junk) = &self.junk {
            if junk.decide(Path::new(path.file_name()?), is_dir).is_some() {
                return Some(Skip::Junk);
            }
        }
        if !self.hidden && name.first() == Some(&b'.') {
            return Some(Skip::Hidden);
        }
        if matches!(entry, Entry::Other) {
            return None;
        }
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        if let Some((i, true)) = self.exclude.decide(rel, is_dir) {
            return Some(Skip::Excluded(i));
        }
        for level in levels.iter().rev() {
            let Ok(rel) = path.strip_prefix(&level.dir) else {
                continue;
            };
            if let Some((_, ignores)) = level.rules.decide(rel, is_dir) {
                if ignores {
                    return Some(Skip::Ignored);
                }
                break;
            }
        }
        let Entry::File(media) = entry else {
            return None;
        };
        if !media.is_supported(name) {
            return Some(Skip::NotMedia);
        }
        if self.include.as_ref().is_some_and(|inc| !inc.is_match(rel)) {
            return Some(Skip::NotIncluded);
        }
        None
    }

    /// Whether every folder from the root down to `dir` would be entered by the path alone
    /// (no ignore files read). `false` for a path outside the root.
    pub fn may_enter(&self, dir: &Path) -> bool {
        let Ok(rel) = dir.strip_prefix(&self.root) else {
            return false;
        };
        let mut at = self.root.clone();
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return false;
            };
            at.push(name);
            if self.skip(&at, Entry::Dir, &[]).is_some() {
                return false;
            }
        }
        true
    }

    /// Blocking: what folder `dir` says about itself, given the levels of its parent: a
    /// `.nomedia` in it, or its own `.immishignore` added to `parent`. A bad line of an
    /// `.immishignore` is logged (file and line) and left out.
    pub fn look_dir(&self, dir: &Path, parent: &Levels) -> DirLook {
        if std::fs::symlink_metadata(dir.join(NOMEDIA)).is_ok() {
            return DirLook::NoMedia;
        }
        match self.level(dir) {
            Some(level) => {
                let mut v = Vec::clone(parent);
                v.push(level);
                DirLook::Walk(Arc::new(v))
            }
            None => DirLook::Walk(Arc::clone(parent)),
        }
    }

    /// Blocking: the `.immishignore` of `dir`, if it has one with any rule. Read again only
    /// when its stat changed, so an edit takes effect at the next look.
    pub fn level(&self, dir: &Path) -> Option<Arc<Level>> {
        let file = dir.join(IGNORE_FILE);
        let meta = std::fs::metadata(&file).ok().filter(|m| m.is_file())?;
        let key = (
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
            meta.ctime_nsec() + meta.ctime() * 1_000_000_000,
        );
        let cached = self.cache.lock().ok().and_then(|c| {
            c.get(dir)
                .filter(|(k, _)| *k == key)
                .map(|(_, r)| r.clone())
        });
        let rules = match cached {
            Some(r) => r,
            None => {
                let rules = Arc::new(read_ignore_file(&file, meta.len()));
                if let Ok(mut c) = self.cache.lock() {
                    if c.len() >= CACHE_MAX {
                        c.clear();
                    }
                    c.insert(dir.to_path_buf(), (key, rules.clone()));
                }
                rules
            }
        };
        (!rules.is_empty()).then(|| {
            Arc::new(Level {
                dir: dir.to_path_buf(),
                rules,
            })
        })
    }

    /// Blocking: the levels that apply inside `dir` (a folder under the root, or the root),
    /// reading the ignore files from the root down, or why a folder on the way is skipped
    /// (`.nomedia`, an ignore line, by name). For the watcher, which sees one path at a time.
    pub fn levels_to(&self, dir: &Path) -> Result<Levels, Skip> {
        let rel = dir
            .strip_prefix(&self.root)
            .map_err(|_| Skip::NotIncluded)?;
        let mut levels: Levels = Arc::new(Vec::new());
        let mut at = self.root.clone();
        let mut parts = rel.components();
        loop {
            levels = match self.look_dir(&at, &levels) {
                DirLook::NoMedia => return Err(Skip::NoMedia),
                DirLook::Walk(l) => l,
            };
            let Some(c) = parts.next() else {
                return Ok(levels);
            };
            let Component::Normal(name) = c else {
                return Err(Skip::NotIncluded);
            };
            at.push(name);
            if let Some(why) = self.skip(&at, Entry::Dir, &levels) {
                return Err(why);
            }
        }
    }

    /// Blocking: whether the ignore files or a `.nomedia` on the way to `path` skip it (a
    /// folder when `is_dir`); what its name and the root's patterns say is
    /// [`Filter::skip`]'s by the path alone, asked before.
    pub fn skipped_on_disk(&self, path: &Path, is_dir: bool) -> Option<Skip> {
        let dir = if is_dir { path } else { path.parent()? };
        let levels = match self.levels_to(dir) {
            Ok(l) => l,
            Err(why) => return Some(why),
        };
        if is_dir {
            return None;
        }
        for level in levels.iter().rev() {
            let Ok(rel) = path.strip_prefix(&level.dir) else {
                continue;
            };
            if let Some((_, ignores)) = level.rules.decide(rel, false) {
                return ignores.then_some(Skip::Ignored);
            }
        }
        None
    }
}

/// Names that copy tools use while a file is still being written: never uploaded.
///
/// `*.part`, `*.crdownload`, `*.tmp`, Syncthing's `.syncthing.*.tmp` and `~syncthing~*`, and
/// rsync's `.name.XXXXXX` (a dot, the final name, a dot and six random characters).
pub fn is_temp_name(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(b".part") || lower.ends_with(b".crdownload") || lower.ends_with(b".tmp") {
        return true;
    }
    if name.starts_with(b"~syncthing~") || name.starts_with(b".syncthing.") {
        return true;
    }
    // rsync: ".IMG_1.jpg.a1B2c3"
    if name.first() == Some(&b'.') && name.len() > 8 {
        let (head, tail) = name.split_at(name.len() - 7);
        if tail[0] == b'.' && tail[1..].iter().all(|c| c.is_ascii_alphanumeric()) && head.len() > 1
        {
            return true;
        }
    }
    false
}

fn read_ignore_file(file: &Path, len: u64) -> Rules {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(file).and_then(|f| {
        f.take(IGNORE_FILE_MAX)
            .read_to_string(&mut text)
            .map(|_| ())
    });
    if let Err(e) = read {
        tracing::warn!(file = %file.display(), "cannot read it ({e}); its rules are not applied");
        return Rules::default();
    }
    if len > IGNORE_FILE_MAX {
        tracing::warn!(
            file = %file.display(),
            "only its first {IGNORE_FILE_MAX} bytes are read"
        );
    }
    let (rules, bad) = Rules::parse(&text);
    for b in bad {
        tracing::warn!("{}: {b}; that line is not applied", file.display());
    }
    rules
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(lines: &[&str]) -> Rules {
        Rules::new(&lines.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ignored(r: &Rules, rel: &str, is_dir: bool) -> bool {
        r.decide(Path::new(rel), is_dir).is_some_and(|(_, i)| i)
    }

    #[test]
    fn temp_names_are_recognised() {
        for n in [
            "IMG_1.jpg.part",
            "a.crdownload",
            "x.TMP",
            ".syncthing.IMG_1.jpg.tmp",
            "~syncthing~IMG_1.jpg",
            ".IMG_1.jpg.a1B2c3",
        ] {
            assert!(is_temp_name(n.as_bytes()), "{n}");
        }
        for n in ["IMG_1.jpg", "holiday.mp4", ".hidden.jpg", "a.b.jpeg"] {
            assert!(!is_temp_name(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn a_bare_name_matches_at_any_depth() {
        let r = rules(&["@eaDir"]);
        assert!(ignored(&r, "@eaDir", true));
        assert!(ignored(&r, "2024/summer/@eaDir", true));
        assert!(ignored(&r, "2024/@eaDir", false));
        assert!(!ignored(&r, "2024/x@eaDir", true));
        let r = rules(&["*.tmp"]);
        assert!(ignored(&r, "a/b/c.tmp", false));
    }

    #[test]
    fn a_slash_anchors_and_a_trailing_slash_means_folders_only() {
        let r = rules(&["/private", "raw/"]);
        assert!(ignored(&r, "private", true));
        assert!(!ignored(&r, "2024/private", true));
        assert!(ignored(&r, "2024/raw", true));
        assert!(!ignored(&r, "2024/raw", false), "a file named raw is kept");
        let r = rules(&["2024/*.jpg"]);
        assert!(ignored(&r, "2024/a.jpg", false));
        assert!(!ignored(&r, "2024/x/a.jpg", false), "* does not cross /");
        let r = rules(&["private/**", "**/@eaDir/**"]);
        assert!(ignored(&r, "private/a.jpg", false));
        assert!(ignored(&r, "x/@eaDir/a.jpg", false));
    }

    #[test]
    fn the_last_matching_line_decides_and_negation_reincludes() {
        let r = rules(&["*.jpg", "!keep*.jpg", "keep_not.jpg"]);
        assert!(ignored(&r, "a.jpg", false));
        assert!(!ignored(&r, "keep1.jpg", false));
        assert_eq!(r.decide(Path::new("keep1.jpg"), false), Some((1, false)));
        assert!(ignored(&r, "keep_not.jpg", false));
        assert_eq!(r.decide(Path::new("a.png"), false), None);
    }

    #[test]
    fn comments_blanks_and_escapes() {
        let (r, bad) = Rules::parse("# comment\n\n\\#hash.jpg\n\\!bang.jpg\ntrail.jpg   \n[bad\n");
        assert_eq!(r.len(), 3);
        assert!(ignored(&r, "#hash.jpg", false));
        assert!(ignored(&r, "!bang.jpg", false));
        assert!(ignored(&r, "trail.jpg", false));
        assert_eq!(bad.len(), 1);
        assert!(
            bad[0].starts_with("line 6: invalid glob \"[bad\""),
            "{}",
            bad[0]
        );
    }

    #[test]
    fn junk_is_matched_by_name_case_insensitively_and_can_be_turned_off() {
        let media = MediaTypes::builtin();
        fn cfg(skip_junk: bool, extra: &[String]) -> FilterConfig<'_> {
            FilterConfig {
                root: Path::new("/p"),
                hidden: true,
                skip_junk,
                junk_extra: extra,
                include: &[],
                exclude: &[],
            }
        }
        let f = Filter::new(&cfg(true, &[])).unwrap();
        for (p, dir) in [
            ("/p/@eaDir", true),
            ("/p/a/#recycle", true),
            ("/p/._IMG_1.jpg", false),
            ("/p/THUMBS.DB", false),
            ("/p/.Trash-1000", true),
            ("/p/$RECYCLE.BIN", true),
            ("/p/lost+found", true),
        ] {
            let e = if dir { Entry::Dir } else { Entry::File(&media) };
            assert_eq!(f.skip(Path::new(p), e, &[]), Some(Skip::Junk), "{p}");
        }
        let jpg = Path::new("/p/a/IMG_1.jpg");
        assert_eq!(f.skip(jpg, Entry::File(&media), &[]), None);
        assert!(!f.may_enter(Path::new("/p/x/@eaDir/SYNOPHOTO")));
        let off = Filter::new(&cfg(false, &[])).unwrap();
        assert_eq!(off.skip(Path::new("/p/@eaDir"), Entry::Dir, &[]), None);
        let more = ["Cache".to_string()];
        let extra = Filter::new(&cfg(true, &more)).unwrap();
        assert_eq!(
            extra.skip(Path::new("/p/a/cache"), Entry::Dir, &[]),
            Some(Skip::Junk)
        );
    }
}
