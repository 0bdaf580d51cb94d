//! A minimal HTTP/1.1 client connection for the click hot path (`--client raw`, the default):
//! one keep-alive TCP connection, one request at a time, a request written from a reused
//! buffer and the answer parsed in place with `httparse` (the parser hyper uses). No
//! allocation per request, no channels, no second task: the work per request is one
//! `write` and (usually) one `read`, which is what lets the tester keep up with `wrk`.
//!
//! It understands what a redirect answer can carry: `Content-Length`, `Transfer-Encoding:
//! chunked`, no body (`HEAD`, 1xx, 204, 304), a body up to the close, and `Connection: close`.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::clicks::find_token;

/// Initial read buffer.
const READ_BUF: usize = 16 * 1024;
/// Largest answer (head and body) kept in memory.
const MAX_ANSWER: usize = 1 << 20;
/// Most headers in an answer.
const MAX_HEADERS: usize = 48;

/// The parts of an answer the tester uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The click token (and `ll_ts`) of a redirect's `Location`.
    pub token: Option<(u128, Option<u64>)>,
    /// The server closes the connection after this answer.
    pub close: bool,
}

/// How the body of an answer is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// One client connection.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
    /// The next request's bytes (see [`write_request`]).
    pub req: Vec<u8>,
}

impl RawConn {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> RawConn {
        RawConn { stream, buf: vec![0; READ_BUF], filled: 0, req: Vec::with_capacity(1024) }
    }

    /// Sends [`RawConn::req`] and reads one whole answer (`head_request`: the request was `HEAD`,
    /// so the answer has no body).
    ///
    /// # Errors
    /// The connection failed or closed, or the answer is not HTTP/1.x; the connection is then unusable.
    pub async fn exchange(&mut self, head_request: bool) -> io::Result<Answer> {
        self.stream.write_all(&self.req).await?;
        let (head_len, answer, framing) = loop {
            if self.filled > 0
                && let Some(parsed) = parse_head(&self.buf[..self.filled], head_request)?
            {
                break parsed;
            }
            self.fill().await?;
        };
        match framing {
            Framing::None => self.consume(head_len),
            Framing::Length(n) => {
                let end = head_len.checked_add(n).filter(|&e| e <= MAX_ANSWER).ok_or_else(too_large)?;
                while self.filled < end {
                    self.fill().await?;
                }
                self.consume(end);
            }
            Framing::Chunked => loop {
                if let Some(len) = chunked_len(&self.buf[head_len..self.filled])? {
                    self.consume(head_len + len);
                    break;
                }
                self.fill().await?;
            },
            Framing::UntilClose => {
                while self.read_some().await? > 0 {
                    self.filled = head_len; // discard the body as it comes
                }
                self.filled = 0;
                return Ok(Answer { close: true, ..answer });
            }
        }
        Ok(answer)
    }

    /// Reads more bytes; EOF is an error (an answer is incomplete).
    async fn fill(&mut self) -> io::Result<()> {
        if self.read_some().await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-answer"));
        }
        Ok(())
    }

    async fn read_some(&mut self) -> io::Result<usize> {
        if self.filled == self.buf.len() {
            if self.buf.len() >= MAX_ANSWER {
                return Err(too_large());
            }
            self.buf.resize((self.buf.len() * 2).min(MAX_ANSWER), 0);
        }
        let n = self.stream.read(&mut self.buf[self.filled..]).await?;
        self.filled += n;
        Ok(n)
    }

    /// Drops the first `n` bytes (one answer); keeps what follows.
    fn consume(&mut self, n: usize) {
        if n < self.filled {
            self.buf.copy_within(n..self.filled, 0);
            self.filled -= n;
        } else {
            self.filled = 0;
        }
    }
}

fn too_large() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "answer larger than 1 MiB")
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Parses an answer head: `None` while incomplete; its length, the answer and the body framing.
fn parse_head(buf: &[u8], head_request: bool) -> io::Result<Option<(usize, Answer, Framing)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(&format!("bad answer head: {e}"))),
    };
    let status = res.code.ok_or_else(|| invalid("no status"))?;
    let mut token = None;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = res.version == Some(0);
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"location") {
            if (300..400).contains(&status) {
                token = find_token(h.value);
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
            length = Some(v.ok_or_else(|| invalid("bad content-length"))?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = h.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            let has = |w: &[u8]| h.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(w));
            if has(b"close") {
                close = true;
            } else if has(b"keep-alive") {
                close = false;
            }
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some((head_len, Answer { status, token, close }, framing)))
}

/// Length of a complete chunked body at the start of `buf` (chunks, last chunk, trailers),
/// or `None` while incomplete.
fn chunked_len(buf: &[u8]) -> io::Result<Option<usize>> {
    let mut pos = 0;
    loop {
        let Some(eol) = find_crlf(&buf[pos..]) else { return Ok(None) };
        let line = &buf[pos..pos + eol];
        let hex = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        let size = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| invalid("bad chunk size"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = find_crlf(&buf[pos..]) else { return Ok(None) };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        let next = pos.checked_add(size).and_then(|p| p.checked_add(2)).filter(|&p| p <= MAX_ANSWER);
        let next = next.ok_or_else(too_large)?;
        if buf.len() < next {
            return Ok(None);
        }
        if &buf[next - 2..next] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
        pos = next;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// Writes a request head into `out` (cleared first): `METHOD path HTTP/1.1`, `Host`, and
/// the optional `User-Agent` and `X-Forwarded-For`.
pub fn write_request(out: &mut Vec<u8>, head: bool, path: &[u8], host: &[u8], ua: Option<&[u8]>, xff: Option<&[u8]>) {
    out.clear();
    out.extend_from_slice(if head { b"HEAD " } else { b"GET " });
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host);
    if let Some(ua) = ua {
        out.extend_from_slice(b"\r\nUser-Agent: ");
        out.extend_from_slice(ua);
    }
    if let Some(ip) = xff {
        out.extend_from_slice(b"\r\nX-Forwarded-For: ");
        out.extend_from_slice(ip);
    }
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const LOC: &str = "https://item.taobao.com/item.htm?id=1&ll_ct=01a22b0b-3df4-779a-a659-5b093b29117d&ll_ts=17";

    #[test]
    fn request_bytes() {
        let mut b = Vec::new();
        write_request(&mut b, false, b"/j/x?y=1", b"h:1", Some(b"UA/1"), Some(b"198.18.0.1"));
        assert_eq!(b, b"GET /j/x?y=1 HTTP/1.1\r\nHost: h:1\r\nUser-Agent: UA/1\r\nX-Forwarded-For: 198.18.0.1\r\n\r\n");
        write_request(&mut b, true, b"/", b"h", None, None);
        assert_eq!(b, b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn heads_and_framing() {
        let ans = format!("HTTP/1.1 302 Found\r\nlocation: {LOC}\r\ncontent-length: 5\r\n\r\nhello");
        let (n, a, f) = parse_head(ans.as_bytes(), false).unwrap().unwrap();
        assert_eq!((n, f), (ans.len() - 5, Framing::Length(5)));
        assert_eq!(a.status, 302);
        assert_eq!(a.token, Some((0x01a2_2b0b_3df4_779a_a659_5b09_3b29_117d, Some(17))));
        assert!(!a.close);
        assert_eq!(parse_head(&ans.as_bytes()[..20], false).unwrap(), None);
        let (_, _, f) = parse_head(ans.as_bytes(), true).unwrap().unwrap();
        assert_eq!(f, Framing::None);
        let (_, a, f) =
            parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", false)
                .unwrap()
                .unwrap();
        assert_eq!((f, a.close, a.token), (Framing::Chunked, true, None));
        let (_, a, f) = parse_head(b"HTTP/1.0 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((f, a.close), (Framing::UntilClose, true));
        assert!(parse_head(b"NOT HTTP\r\n\r\n", false).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", false).is_err());
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(chunked_len(b"5\r\nhello\r\n0\r\n\r\nNEXT").unwrap(), Some(15));
        assert_eq!(chunked_len(b"5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n").unwrap(), Some(25));
        assert_eq!(chunked_len(b"5\r\nhel").unwrap(), None);
        assert_eq!(chunked_len(b"5\r\nhello\r\n0\r\n").unwrap(), None);
        assert!(chunked_len(b"zz\r\n").is_err());
        assert!(chunked_len(b"2\r\nabXY").is_err());
    }

    /// A server answering each request with the given bytes, in pieces, on one connection.
    async fn serve(answers: Vec<Vec<u8>>) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for a in answers {
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                for piece in a.chunks(7) {
                    s.write_all(piece).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn answers_over_one_connection() {
        let answers = vec![
            format!("HTTP/1.1 302 Found\r\nLocation: {LOC}\r\nContent-Length: 3\r\n\r\nabc").into_bytes(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(),
            b"HTTP/1.1 302 Found\r\nContent-Length: 10\r\n\r\n".to_vec(),
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        ];
        let addr = serve(answers).await;
        let mut c = RawConn::new(TcpStream::connect(addr).await.unwrap());
        write_request(&mut c.req, false, b"/", b"h", None, None);
        let a = c.exchange(false).await.unwrap();
        assert_eq!((a.status, a.token.map(|t| t.1), a.close), (302, Some(Some(17)), false));
        let a = c.exchange(false).await.unwrap();
        assert_eq!((a.status, a.token), (200, None));
        // A HEAD answer has no body, whatever its Content-Length says.
        write_request(&mut c.req, true, b"/", b"h", None, None);
        let a = c.exchange(true).await.unwrap();
        assert_eq!(a.status, 302);
        write_request(&mut c.req, false, b"/", b"h", None, None);
        let a = c.exchange(false).await.unwrap();
        assert_eq!((a.status, a.close), (404, true));
        assert!(c.exchange(false).await.is_err());
    }
}
