//! Subscriptions over plain HTTP/1.1 (`http://`, no `--http2`), read straight from the socket:
//! the `GET` is written by hand, the response head is parsed with `httparse`, and the body's
//! chunked transfer coding is undone here ([`Chunked`]) before its bytes reach the SSE parser.
//!
//! Why not hyper's client connection, as over TLS and HTTP/2: the load generator shares the
//! machine with the server it measures, and every cycle it spends is one the server does not
//! get. With hyper, each chunk the server wrote crossed a channel from the connection future to
//! the body (an `AtomicWaker` registration and a second wake of the task per chunk), and a
//! profile of a fast run at 10,000 subscribers put the reader at about as much CPU as the hub
//! (BENCHMARKS.md, "A reader without hyper"). Here one read of the socket is one poll of the
//! task: read, undo the chunk framing, parse, count.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::plan::Endpoint;

/// Bytes read from the socket at a time; also the longest chunk-size or trailer line accepted.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// The most response header fields read.
const MAX_HEADERS: usize = 64;

/// How the body of the response is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// An opened subscription: its socket, how its body is framed, and the body bytes that came
/// with the response head.
pub(super) struct PlainStream {
    pub(super) socket: TcpStream,
    pub(super) framing: Framing,
    pub(super) buffer: Vec<u8>,
    /// Bytes of `buffer` read and not yet decoded (the body's start).
    pub(super) filled: usize,
}

/// Connects, sends the `GET` and reads the response head, which must be a `200`.
///
/// # Errors
/// The connection failed or closed, the head is not HTTP or too large, the status is not 200,
/// or the body has a framing this reader does not take (a `Content-Length`: an event stream has
/// none).
pub(super) async fn open_plain_stream(endpoint: &Endpoint) -> Result<PlainStream, String> {
    let mut socket = TcpStream::connect(endpoint.addr)
        .await
        .map_err(|e| format!("connecting to {}: {e}", endpoint.addr))?;
    // The request goes out at once; the server's frames are what is measured.
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    let request = request_head(endpoint);
    socket
        .write_all(&request)
        .await
        .map_err(|e| format!("subscribing: {e}"))?;
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    let mut filled = 0;
    loop {
        let read = socket
            .read(&mut buffer[filled..])
            .await
            .map_err(|e| format!("subscribing: {e}"))?;
        if read == 0 {
            return Err("the server closed the connection before answering".into());
        }
        filled += read;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buffer[..filled]) {
            Ok(httparse::Status::Partial) if filled == buffer.len() => {
                return Err(format!("a response head over {READ_BUFFER_BYTES} bytes"));
            }
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(head_len)) => {
                let framing = framing_of(&response)?;
                buffer.copy_within(head_len..filled, 0);
                return Ok(PlainStream {
                    socket,
                    framing,
                    buffer,
                    filled: filled - head_len,
                });
            }
            Err(error) => return Err(format!("reading the response head: {error}")),
        }
    }
}

/// The `GET` of a subscription, as bytes on the wire.
fn request_head(endpoint: &Endpoint) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(endpoint.target.to_string().as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    head.extend_from_slice(endpoint.host.as_bytes());
    head.extend_from_slice(b"\r\nAccept: text/event-stream\r\n\r\n");
    head
}

/// Checks the status and reads the body's framing from a complete response head.
fn framing_of(response: &httparse::Response<'_, '_>) -> Result<Framing, String> {
    match response.code {
        Some(200) => {}
        Some(code) => return Err(format!("the server answered {code}")),
        None => return Err("a response head without a status".into()),
    }
    let header = |name: &'static str| {
        response
            .headers
            .iter()
            .filter(move |header| header.name.eq_ignore_ascii_case(name))
            .map(|header| String::from_utf8_lossy(header.value).to_ascii_lowercase())
    };
    // RFC 9112 §6.3: with Transfer-Encoding, chunked must be the last coding.
    if let Some(codings) = header("transfer-encoding").next_back() {
        return match codings.rsplit(',').next().map(str::trim) {
            Some("chunked") => Ok(Framing::Chunked),
            _ => Err(format!("an unsupported Transfer-Encoding: {codings}")),
        };
    }
    if header("content-length").next().is_some() {
        return Err("an event stream with a Content-Length".into());
    }
    Ok(Framing::UntilClose)
}

/// Where the chunked decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes are left.
    Data(u64),
    /// After a chunk's data: the CRLF, of which this many bytes were read.
    DataEnd(u8),
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// The body ended.
    Done,
}

/// Undoes the chunked transfer coding (RFC 9112 §7.1) of a body that arrives in pieces.
#[derive(Debug)]
pub(super) struct Chunked {
    state: ChunkState,
}

impl Chunked {
    pub(super) fn new() -> Self {
        Self {
            state: ChunkState::Size,
        }
    }

    /// Whether the last chunk (and its trailers) arrived.
    pub(super) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes what it can of `input`, handing each piece of chunk data to `on_data` in order.
    /// Returns how many bytes it consumed: the rest is the start of a size or trailer line, to
    /// be given again with the bytes that follow it.
    ///
    /// # Errors
    /// A malformed size line or chunk end, or an error of `on_data`.
    pub(super) fn decode(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<usize, String> {
        let mut at = 0;
        while at < input.len() {
            let rest = &input[at..];
            match self.state {
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        at += used;
                        self.state = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => return Ok(at),
                    Err(_) => return Err("a malformed chunk size line".into()),
                },
                ChunkState::Data(left) => {
                    let take =
                        usize::try_from(left).map_or(rest.len(), |left| left.min(rest.len()));
                    on_data(&rest[..take])?;
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd(0)
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd(read) => {
                    let expected = b"\r\n"[usize::from(read)];
                    if rest[0] != expected {
                        return Err("a chunk not ended by CRLF".into());
                    }
                    at += 1;
                    self.state = if read == 0 {
                        ChunkState::DataEnd(1)
                    } else {
                        ChunkState::Size
                    };
                }
                ChunkState::Trailers => match memchr::memmem::find(rest, b"\r\n") {
                    Some(0) => {
                        at += 2;
                        self.state = ChunkState::Done;
                    }
                    Some(end) => at += end + 2,
                    None => return Ok(at),
                },
                // Nothing may follow the body on a connection that carries only this stream.
                ChunkState::Done => return Err("bytes after the end of the body".into()),
            }
        }
        Ok(at)
    }
}

/// What a plain body's bytes are given to.
pub(super) trait BodySink {
    /// A piece of the body (the chunk framing undone), in order.
    ///
    /// # Errors
    /// Bytes the sink cannot take (the stream is then read no further).
    fn data(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// The pieces of one read of the socket were all given.
    fn read_done(&mut self);
}

/// Reads `stream`'s body into `sink` until `stop` resolves (then returns `Ok(())`).
///
/// # Errors
/// A failed read, a malformed body, an error of the sink, or the end of the body (the server
/// ended the stream).
pub(super) async fn read_plain_body(
    mut stream: PlainStream,
    stop: impl std::future::Future<Output = ()>,
    sink: &mut impl BodySink,
) -> Result<(), String> {
    let mut stop = std::pin::pin!(stop);
    let mut chunked = Chunked::new();
    // The bytes that came with the head are decoded before the first read.
    let mut read_before_decoding = stream.filled == 0;
    loop {
        if read_before_decoding {
            let free = &mut stream.buffer[stream.filled..];
            if free.is_empty() {
                return Err(format!(
                    "a chunk size or trailer line over {READ_BUFFER_BYTES} bytes"
                ));
            }
            let read = tokio::select! {
                biased;
                () = &mut stop => return Ok(()),
                read = stream.socket.read(free) => {
                    read.map_err(|e| format!("reading the stream: {e}"))?
                }
            };
            if read == 0 {
                return Err("the server ended the stream".into());
            }
            stream.filled += read;
        }
        read_before_decoding = true;
        let filled = stream.filled;
        let consumed = match stream.framing {
            Framing::Chunked => chunked.decode(&stream.buffer[..filled], |data| sink.data(data))?,
            Framing::UntilClose => {
                sink.data(&stream.buffer[..filled])?;
                filled
            }
        };
        sink.read_done();
        if chunked.is_done() {
            return Err("the server ended the stream".into());
        }
        stream.buffer.copy_within(consumed..filled, 0);
        stream.filled = filled - consumed;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Decodes `pieces` one after the other as a socket would deliver them, carrying the
    /// unconsumed rest over; returns the data and whether the body ended.
    fn decode_pieces(pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), String> {
        let mut chunked = Chunked::new();
        let mut data = Vec::new();
        let mut carried: Vec<u8> = Vec::new();
        for piece in pieces {
            carried.extend_from_slice(piece);
            let consumed = chunked.decode(&carried, |bytes| {
                data.extend_from_slice(bytes);
                Ok(())
            })?;
            carried.drain(..consumed);
        }
        Ok((data, chunked.is_done()))
    }

    #[test]
    fn chunks_split_anywhere_decode_to_the_same_data() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\n";
        let whole = decode_pieces(&[body]).unwrap();
        assert_eq!(whole, (b"helloabcdefghijklmnopqrstuvwxyz".to_vec(), true));
        for cut in 0..=body.len() {
            for second in cut..=body.len() {
                let pieces = [&body[..cut], &body[cut..second], &body[second..]];
                assert_eq!(
                    decode_pieces(&pieces).unwrap(),
                    whole,
                    "cuts {cut}, {second}"
                );
            }
        }
    }

    #[test]
    fn an_unfinished_body_is_not_done_and_bad_framing_is_an_error() {
        assert_eq!(
            decode_pieces(&[b"3\r\nabc\r\n3\r\nde"]).unwrap(),
            (b"abcde".to_vec(), false)
        );
        assert!(decode_pieces(&[b"zz\r\n"]).is_err());
        assert!(decode_pieces(&[b"3\r\nabcX\r\n"]).is_err());
        // Two bytes where the CRLF ends a chunk are not taken for it.
        assert!(decode_pieces(&[b"3\r\nabcXY5\r\nhello\r\n0\r\n\r\n"]).is_err());
        assert!(decode_pieces(&[b"0\r\n\r\nmore"]).is_err());
    }

    /// Collects a body's pieces and counts the reads.
    #[derive(Default)]
    struct Collect {
        data: Vec<u8>,
        reads: usize,
    }

    impl BodySink for Collect {
        fn data(&mut self, bytes: &[u8]) -> Result<(), String> {
            self.data.extend_from_slice(bytes);
            Ok(())
        }
        fn read_done(&mut self) {
            self.reads += 1;
        }
    }

    /// A one-connection server on a port-0 listener: reads the request head, then writes each
    /// of `writes` in turn (a pause between them), waits `hold` and closes. Returns the endpoint
    /// and the request it received.
    async fn serve_once(
        writes: Vec<&'static [u8]>,
        hold: Duration,
    ) -> (Endpoint, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                socket.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            for write in writes {
                socket.write_all(write).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(hold).await;
            request
        });
        let url: http::Uri = format!("http://{addr}/.well-known/mercure?topic=t")
            .parse()
            .unwrap();
        (Endpoint::new(&url, false).unwrap(), server)
    }

    #[tokio::test]
    async fn a_body_that_came_with_the_head_is_read_before_the_socket_and_the_end_is_an_error() {
        let (endpoint, server) = serve_once(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"6\r\n world\r\n",
            b"0\r\n\r\n",
        ], Duration::ZERO)
        .await;
        let stream = open_plain_stream(&endpoint).await.unwrap();
        let mut sink = Collect::default();
        let ended = read_plain_body(stream, std::future::pending(), &mut sink).await;
        assert_eq!(ended, Err("the server ended the stream".to_owned()));
        assert_eq!(sink.data, b"hello world");
        assert_eq!(
            sink.reads, 3,
            "one call per read, the head's leftover included"
        );
        let request = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(
            request.starts_with("GET /.well-known/mercure?topic=t HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("\r\nAccept: text/event-stream\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_body_without_chunks_is_read_until_the_close() {
        let (endpoint, _server) = serve_once(
            vec![
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
                b"data: x\n\n",
            ],
            Duration::ZERO,
        )
        .await;
        let stream = open_plain_stream(&endpoint).await.unwrap();
        assert_eq!(stream.framing, Framing::UntilClose);
        let mut sink = Collect::default();
        let ended = read_plain_body(stream, std::future::pending(), &mut sink).await;
        assert_eq!(ended, Err("the server ended the stream".to_owned()));
        assert_eq!(sink.data, b"data: x\n\n");
    }

    #[tokio::test]
    async fn a_refusal_or_a_sized_body_is_an_error_and_stop_ends_the_read() {
        let (endpoint, _server) = serve_once(
            vec![b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"],
            Duration::ZERO,
        )
        .await;
        assert_eq!(
            open_plain_stream(&endpoint).await.err(),
            Some("the server answered 503".to_owned())
        );
        let (endpoint, _server) = serve_once(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"],
            Duration::ZERO,
        )
        .await;
        assert!(open_plain_stream(&endpoint).await.is_err());
        // An open stream with nothing to read: `stop` ends it with Ok.
        let (endpoint, _server) = serve_once(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"],
            Duration::from_secs(30),
        )
        .await;
        let stream = open_plain_stream(&endpoint).await.unwrap();
        let mut sink = Collect::default();
        let stop = tokio::time::sleep(Duration::from_millis(50));
        assert_eq!(read_plain_body(stream, stop, &mut sink).await, Ok(()));
        assert!(sink.data.is_empty());
    }
}
