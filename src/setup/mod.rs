//! Setting up and checking an install: `immish-sync init` (asks or takes the server, the key
//! and the folders, checks them against the server, then writes the config) and
//! `immish-sync doctor` (every check an operator would otherwise do by hand, one line each).
//!
//! Owns: the prompts, the atomic private writes of the config and the key file, the
//! checks' wording and their levels, and the advice about what an API key may do (said
//! here, once, rather than at every start). Must not: start the daemon, open or create the
//! state database, or change anything on the server; `doctor` writes nothing but a probe
//! file in the state directory, removed at once.
//!
//! Both commands reach the server only through [`crate::api::ApiClient`]'s public surface
//! (connect, the key's permissions, the server version, the HTTP client for one ping).

pub mod doctor;
pub mod init;
mod term;

/// The permissions a least-privilege key needs for what immish-sync does today: upload (and
/// the duplicate check), read assets back (verify, pulls), and read the user (to tell the
/// user's own assets from a partner's in the mirror).
pub const LEAST_PRIVILEGE: [&str; 3] = ["asset.upload", "asset.read", "user.read"];

/// What a key with these permissions means for the user, when it is more than immish-sync
/// needs: `None` for a key without `all` or `asset.delete`.
pub fn key_power_advice(permissions: &[String]) -> Option<String> {
    let has = |p: &str| permissions.iter().any(|q| q == p);
    let least = LEAST_PRIVILEGE.join(", ");
    if has("all") {
        Some(format!(
            "the key has `all`, so it could also delete assets (immish-sync never does). `all` \
             is what live events need (or a password login); a key with only {least} works \
             too, with changes on the server seen at each pull instead of at once"
        ))
    } else if has("asset.delete") {
        Some(format!(
            "the key has asset.delete, which nothing in immish-sync uses; a key with only \
             {least} is safer"
        ))
    } else {
        None
    }
}

/// The permissions the library (src/library/) uses beyond [`LEAST_PRIVILEGE`] that a key
/// lacks, each with what it is for: albums when some root asks for them, `asset.update` for
/// Live Photos whose halves arrive apart (and for stacks), `stack.create` when some root
/// stacks. Without them uploads go on; the daemon says so once.
pub fn missing_for_library(
    permissions: &[String],
    roots: &[crate::config::RootConfig],
) -> Vec<(&'static str, &'static str)> {
    if permissions.iter().any(|p| p == "all") {
        return Vec::new();
    }
    let albums = roots.iter().any(|r| {
        r.library.album != crate::config::AlbumMode::None || r.library.album_name.is_some()
    });
    let stacks = roots.iter().any(|r| r.library.stacks);
    let mut wanted = Vec::new();
    if albums {
        for p in ["album.read", "album.create", "albumAsset.create"] {
            wanted.push((p, "albums"));
        }
    }
    wanted.push((
        "asset.update",
        "Live Photos whose halves arrive apart, and stacks",
    ));
    if stacks {
        wanted.push(("stack.create", "stacks (RAW + JPEG)"));
    }
    wanted
        .into_iter()
        .filter(|(p, _)| !permissions.iter().any(|q| q == p))
        .collect()
}

/// The least-privilege permissions a key lacks (never `all`-holders: they lack nothing).
pub fn missing_least_privilege(permissions: &[String]) -> Vec<&'static str> {
    if permissions.iter().any(|p| p == "all") {
        return Vec::new();
    }
    LEAST_PRIVILEGE
        .into_iter()
        .filter(|p| !permissions.iter().any(|q| q == p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn advice_is_given_only_for_keys_that_can_delete() {
        let all = key_power_advice(&perms(&["all"])).unwrap();
        assert!(all.contains("live events"), "{all}");
        assert!(all.contains("asset.upload, asset.read, user.read"), "{all}");
        let del = key_power_advice(&perms(&["asset.upload", "asset.read", "asset.delete"]));
        assert!(del.unwrap().contains("asset.delete"));
        assert_eq!(key_power_advice(&perms(&LEAST_PRIVILEGE)), None);
    }

    #[test]
    fn library_permissions_follow_the_roots_settings() {
        let mut root = crate::config::RootConfig::at("/p");
        let names = |m: Vec<(&'static str, &'static str)>| {
            m.into_iter().map(|(p, _)| p).collect::<Vec<_>>()
        };
        let least = perms(&LEAST_PRIVILEGE);
        let roots = std::slice::from_ref(&root);
        assert_eq!(
            names(missing_for_library(&least, roots)),
            ["asset.update", "stack.create"]
        );
        root.library.stacks = false;
        root.library.album = crate::config::AlbumMode::Folder;
        let roots = std::slice::from_ref(&root);
        assert_eq!(
            names(missing_for_library(&least, roots)),
            [
                "album.read",
                "album.create",
                "albumAsset.create",
                "asset.update"
            ]
        );
        assert!(missing_for_library(&perms(&["all"]), roots).is_empty());
    }

    #[test]
    fn the_least_privilege_list_names_only_what_a_feature_uses() {
        assert_eq!(LEAST_PRIVILEGE, ["asset.upload", "asset.read", "user.read"]);
        assert_eq!(
            missing_least_privilege(&perms(&["asset.upload", "asset.read"])),
            ["user.read"]
        );
        assert!(missing_least_privilege(&perms(&["all"])).is_empty());
    }
}
