//! A scripted HTTP/1.1 peer on a raw socket, for what a well-behaved server cannot do on
//! request: answer before reading the body and reset, stall, read slowly, send nginx HTML.

use super::*;

/// One request as the peer saw it.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub content_length: Option<u64>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub enum Action {
    /// Read the whole body, then answer.
    Answer(u16, Vec<(&'static str, String)>, String),
    /// Answer right after the head without reading the body, then close: the client
    /// sees the answer mid-upload and then a reset.
    AnswerEarly(u16, Vec<(&'static str, String)>, String),
    /// Answer right after the head, then keep reading (and counting) the body until
    /// the client stops sending, as a server that drains a request it does not need.
    AnswerEarlyThenDrain(u16, String),
    /// Read the head, then reset the connection without an answer.
    Reset,
    /// Read the head, then nothing, ever.
    Stall,
    /// Read the body `chunk` bytes every `every`, then answer 201 `created`.
    SlowRead { chunk: usize, every: Duration },
    /// Read the whole body, then decide (for routes that look at the body).
    AfterBody(Box<dyn FnOnce(&Seen) -> Action + Send>),
}

pub fn after_body(f: impl FnOnce(&Seen) -> Action + Send + 'static) -> Action {
    Action::AfterBody(Box::new(f))
}

pub fn json(status: u16, body: &str) -> Action {
    Action::Answer(status, Vec::new(), body.to_owned())
}

/// The routes every connect needs, Immich style, with an `all` key.
pub fn immich_basics(s: &Seen) -> Option<Action> {
    Some(match (s.method.as_str(), s.path()) {
        ("GET", "/.well-known/immich") => json(200, r#"{"api":{"endpoint":"/api"}}"#),
        ("GET", "/api/server/ping") => json(200, r#"{"res":"pong"}"#),
        ("GET", "/api/api-keys/me") => json(
            200,
            r#"{"id":"k1","name":"test","createdAt":"x","updatedAt":"x","permissions":["all"]}"#,
        ),
        ("GET", "/api/users/me") => json(200, r#"{"id":"user-1","email":"a@example.com"}"#),
        _ => return None,
    })
}

pub fn not_found() -> Action {
    json(
        404,
        r#"{"message":"Cannot GET","error":"Not Found","statusCode":404}"#,
    )
}

pub const EARLY_CLOSE_DELAY_MS: u64 = 20;

type Route = dyn Fn(&Seen) -> Action + Send + Sync;

pub struct RawServer {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Body bytes read so far by `SlowRead`.
    pub received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawServer {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    pub fn seen_path(&self, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path() == path)
            .collect()
    }
}

pub async fn start(route: impl Fn(&Seen) -> Action + Send + Sync + 'static) -> RawServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(AtomicU64::new(0));
    let route: Arc<Route> = Arc::new(route);
    let (seen2, received2) = (seen.clone(), received.clone());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (route, seen, received) = (route.clone(), seen2.clone(), received2.clone());
            tokio::spawn(async move {
                let _ = serve(stream, &*route, &seen, &received).await;
            });
        }
    });
    RawServer {
        base: format!("http://{addr}"),
        seen,
        received,
        task,
    }
}

async fn serve(
    mut stream: TcpStream,
    route: &Route,
    seen: &Mutex<Vec<Seen>>,
    received: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let mut s = Seen {
        method: first.next().unwrap_or("").to_owned(),
        target: first.next().unwrap_or("").to_owned(),
        ..Seen::default()
    };
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((n, v)) = line.split_once(':') {
            s.headers
                .push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    s.content_length = s.header("content-length").and_then(|v| v.parse().ok());
    let mut body = buf[head_end..].to_vec();
    let want = s.content_length.unwrap_or(0) as usize;

    let mut action = route(&s);
    if let Action::AfterBody(decide) = action {
        while body.len() < want {
            let mut chunk = vec![0u8; 256 * 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        s.body = body.clone();
        action = decide(&s);
    }
    match action {
        Action::AfterBody(_) => unreachable!("decided above"),
        Action::Answer(status, headers, text) => {
            while body.len() < want {
                let mut chunk = vec![0u8; 256 * 1024];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            s.body = body;
            seen.lock().expect("seen lock").push(s);
            respond(&mut stream, status, &headers, &text).await?;
            stream.shutdown().await?;
        }
        Action::AnswerEarly(status, headers, text) => {
            seen.lock().expect("seen lock").push(s);
            respond(&mut stream, status, &headers, &text).await?;
            // Closed with unread data: the kernel answers the rest with a reset. The
            // pause lets the answer leave first (a close discards unsent data).
            tokio::time::sleep(Duration::from_millis(EARLY_CLOSE_DELAY_MS)).await;
        }
        Action::AnswerEarlyThenDrain(status, text) => {
            respond(&mut stream, status, &[], &text).await?;
            let mut total = body.len() as u64;
            let mut chunk = vec![0u8; 256 * 1024];
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n as u64,
                }
                received.store(total, Ordering::SeqCst);
            }
            received.store(total, Ordering::SeqCst);
            seen.lock().expect("seen lock").push(s);
        }
        Action::Reset => {
            seen.lock().expect("seen lock").push(s);
            #[allow(deprecated)] // SO_LINGER 0 does not block on drop: it resets at once
            stream.set_linger(Some(Duration::ZERO))?;
        }
        Action::Stall => {
            seen.lock().expect("seen lock").push(s);
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Action::SlowRead { chunk, every } => {
            received.store(body.len() as u64, Ordering::SeqCst);
            let mut eof = false;
            while body.len() < want {
                tokio::time::sleep(every).await;
                let mut c = vec![0u8; chunk];
                let n = stream.read(&mut c).await.unwrap_or(0);
                if n == 0 {
                    eof = true;
                    break;
                }
                body.extend_from_slice(&c[..n]);
                received.store(body.len() as u64, Ordering::SeqCst);
            }
            s.body = body;
            seen.lock().expect("seen lock").push(s);
            if !eof {
                respond(
                    &mut stream,
                    201,
                    &[],
                    r#"{"id":"00000000-0000-4000-8000-0000000000e4","status":"created"}"#,
                )
                .await?;
            }
        }
    }
    Ok(())
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&'static str, String)],
    body: &str,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        let ct = if body.starts_with('<') {
            "text/html"
        } else {
            "application/json; charset=utf-8"
        };
        head.push_str(&format!("content-type: {ct}\r\n"));
    }
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    // One write, so that the whole answer leaves in one segment.
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

/// The parts of a multipart body: (Content-Disposition line, content).
pub fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("a boundary")
        .trim();
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(start) = find(rest, delim.as_bytes()) {
        rest = &rest[start + delim.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        rest = &rest[2..]; // CRLF after the delimiter
        let head_end = find(rest, b"\r\n\r\n").expect("part head");
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let content_start = head_end + 4;
        let next = find(&rest[content_start..], delim.as_bytes()).expect("next delimiter");
        let content = rest[content_start..content_start + next - 2].to_vec(); // minus CRLF
        parts.push((head, content));
        rest = &rest[content_start + next..];
    }
    parts
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
