//! The terminal for `init` and `doctor`: whether stdin and stdout are terminals, questions
//! on stderr with answers from stdin (the API key read without echo), colour only on a
//! terminal, and output that stops quietly when the reader goes away (`doctor | head -1`).

use std::io::{self, BufRead, IsTerminal, Write};

/// Whether questions can be asked: stdin is a terminal.
pub(crate) fn stdin_is_terminal() -> bool {
    io::stdin().is_terminal()
}

/// Whether stdout gets colour: a terminal, and `NO_COLOR` unset (<https://no-color.org>).
pub(crate) fn stdout_wants_colour() -> bool {
    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Asks questions on `out` and reads the answers from `input`, a line each.
pub(crate) struct Ask<R, W> {
    pub(crate) input: R,
    pub(crate) out: W,
}

impl<R: BufRead, W: Write> Ask<R, W> {
    /// One answer, trimmed; `default` (shown in brackets) when the answer is empty. End of
    /// input is an error: a question nobody can answer must not loop.
    pub(crate) fn line(&mut self, question: &str, default: Option<&str>) -> io::Result<String> {
        match default {
            Some(d) => write!(self.out, "{question} [{d}]: ")?,
            None => write!(self.out, "{question}: ")?,
        }
        self.out.flush()?;
        let mut answer = String::new();
        if self.input.read_line(&mut answer)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no answer (end of input)",
            ));
        }
        let answer = answer.trim();
        Ok(match (answer.is_empty(), default) {
            (true, Some(d)) => d.to_owned(),
            _ => answer.to_owned(),
        })
    }

    /// Answers until an empty one (at least one is required).
    pub(crate) fn list(&mut self, question: &str, more: &str) -> io::Result<Vec<String>> {
        let mut answers = Vec::new();
        loop {
            let q = if answers.is_empty() { question } else { more };
            let a = self.line(q, None)?;
            if a.is_empty() {
                if answers.is_empty() {
                    writeln!(self.out, "  at least one is needed")?;
                    continue;
                }
                return Ok(answers);
            }
            answers.push(a);
        }
    }
}

/// Reads one line from the terminal without echoing it (for the API key), the question on
/// stderr. Echo is restored before returning, whatever happened. `input` is stdin (its lock
/// is taken once, by the caller: it is not reentrant).
#[cfg(unix)]
pub(crate) fn read_secret_line(input: &mut impl BufRead, question: &str) -> io::Result<String> {
    use std::os::unix::io::AsRawFd;
    let mut err = io::stderr();
    write!(err, "{question}: ")?;
    err.flush()?;
    let fd = io::stdin().as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it for a descriptor we hold open.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let have_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: as above; the settings are a copy of the terminal's own with echo off.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = input.read_line(&mut line);
    if have_tty {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    if read? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "no answer (end of input)",
        ));
    }
    Ok(line.trim().to_owned())
}

/// Lines to stdout that stop, without an error, once the reader has gone (a closed pipe):
/// the rest of a report nobody reads is not worth a panic or a failure exit.
pub(crate) struct Lines<W> {
    out: W,
    closed: bool,
}

impl<W: Write> Lines<W> {
    pub(crate) fn new(out: W) -> Lines<W> {
        Lines { out, closed: false }
    }

    pub(crate) fn line(&mut self, text: &str) {
        if self.closed {
            return;
        }
        if writeln!(self.out, "{text}")
            .and_then(|()| self.out.flush())
            .is_err()
        {
            // EPIPE or any other write error: nobody reads what follows.
            self.closed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_trimmed_and_defaults_taken_on_enter() {
        let mut ask = Ask {
            input: io::Cursor::new("  https://x \n\n/a\n/b\n\n"),
            out: Vec::new(),
        };
        assert_eq!(ask.line("URL", None).unwrap(), "https://x");
        assert_eq!(ask.line("State", Some("/s")).unwrap(), "/s");
        assert_eq!(ask.list("Folder", "Another").unwrap(), ["/a", "/b"]);
        let shown = String::from_utf8(ask.out).unwrap();
        assert!(shown.contains("State [/s]: "), "{shown}");
        assert!(shown.contains("Another: "), "{shown}");
    }

    #[test]
    fn end_of_input_is_an_error_not_a_loop() {
        let mut ask = Ask {
            input: io::Cursor::new("\n"),
            out: Vec::new(),
        };
        let e = ask.list("Folder", "Another").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_reader_ends_the_output_quietly() {
        let mut lines = Lines::new(Closed);
        lines.line("ok");
        lines.line("more");
        assert!(lines.closed);
    }
}
