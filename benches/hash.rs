//! SHA-1 throughput of the daemon's own hasher (`immish_sync::hash::hash_file`), for
//! `benches/run.sh` to set beside `openssl dgst -sha1` on the same files: not a timed test.
//!
//! usage: cargo run --release --example hash-bench -- FILE [FILE ...]
//! Hashes every FILE on a thread of its own, all at once (two files: both cores), and
//! prints one line: `files N bytes B seconds S`. Read the files once first for a warm cache.

use std::path::PathBuf;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

fn main() {
    let files: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if files.is_empty() {
        eprintln!("usage: hash-bench FILE [FILE ...]");
        std::process::exit(2);
    }
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let bytes: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|f| {
                let cancel = &cancel;
                s.spawn(move || match immish_sync::hash::hash_file(f, cancel) {
                    Ok((_, n)) => n,
                    Err(e) => {
                        eprintln!("{e}");
                        std::process::exit(1);
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let secs = start.elapsed().as_secs_f64();
    println!("files {} bytes {bytes} seconds {secs:.4}", files.len());
}
