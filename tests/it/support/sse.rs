//! An SSE client for tests: reqwest for HTTP, ssehub's WHATWG parser for the stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use ssehub::wire::{ParsedEvent, Parser};

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// How a stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The server finished the response properly (terminating chunk).
    Clean,
    /// The connection broke.
    Error,
}

pub struct SseClient {
    pub status: u16,
    pub headers: HeaderMap,
    body: ByteStream,
    parser: Parser,
    pending: VecDeque<ParsedEvent>,
    /// The raw bytes received so far.
    pub raw: Vec<u8>,
    /// Events of the hub's reserved `mercure` type (a replay gap), which a browser's
    /// `onmessage` never sees: kept apart, in order, for the tests that look for them.
    pub signals: Vec<ParsedEvent>,
    pub ended: Option<End>,
}

impl SseClient {
    /// Opens `url` with extra request headers; fails the test if it cannot connect or the
    /// headers do not arrive within 5 s.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::send(request).await
    }

    /// Sends `request` (any method), failing the test if it cannot connect or the headers do
    /// not arrive within 5 s; its answer read as a stream.
    pub async fn send(request: reqwest::RequestBuilder) -> Self {
        let response = tokio::time::timeout(Duration::from_secs(5), request.send())
            .await
            .expect("response headers within 5 s")
            .expect("connect");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Self {
            status,
            headers,
            body: Box::pin(response.bytes_stream()),
            parser: Parser::new(),
            pending: VecDeque::new(),
            raw: Vec::new(),
            signals: Vec::new(),
            ended: None,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Reads until an event is available or `limit` passes (`None`), or the stream ends.
    pub async fn next_event_within(&mut self, limit: Duration) -> Option<ParsedEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if !self.read_chunk(deadline).await {
                return None;
            }
        }
    }

    /// The next event of the reserved `mercure` type (kept apart from the others, see
    /// [`Self::signals`]); fails the test after 5 s.
    pub async fn next_signal(&mut self) -> ParsedEvent {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if !self.signals.is_empty() {
                return self.signals.remove(0);
            }
            assert!(
                self.read_chunk(deadline).await,
                "no `mercure` event within 5 s (ended: {:?})",
                self.ended
            );
        }
    }

    /// Reads one chunk and parses it; `false` once the stream ended or `deadline` passed.
    async fn read_chunk(&mut self, deadline: tokio::time::Instant) -> bool {
        if self.ended.is_some() {
            return false;
        }
        match tokio::time::timeout_at(deadline, self.body.next()).await {
            Err(_) => return false,
            Ok(None) => self.ended = Some(End::Clean),
            Ok(Some(Err(_))) => self.ended = Some(End::Error),
            Ok(Some(Ok(chunk))) => {
                self.raw.extend_from_slice(&chunk);
                for event in self.parser.push(&chunk).expect("valid event stream") {
                    if event.event_type == ssehub::wire::HUB_EVENT_TYPE {
                        self.signals.push(event);
                    } else {
                        self.pending.push_back(event);
                    }
                }
            }
        }
        true
    }

    /// The next event; fails the test after 5 s.
    pub async fn next_event(&mut self) -> ParsedEvent {
        match self.next_event_within(Duration::from_secs(5)).await {
            Some(event) => event,
            None => panic!("no event within 5 s (ended: {:?})", self.ended),
        }
    }

    /// The next `n` events' ids.
    pub async fn next_ids(&mut self, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.next_event().await.id);
        }
        ids
    }

    /// Asserts that the stream stays open and sends no event for `limit`: an event fails the
    /// test, and so does the stream ending or breaking before the deadline (a closed stream
    /// delivers nothing, which proves nothing about filtering).
    pub async fn assert_no_event(&mut self, limit: Duration) {
        if let Some(event) = self.next_event_within(limit).await {
            panic!("unexpected event {event:?}");
        }
        assert!(
            self.ended.is_none(),
            "the stream ended ({:?}) within {limit:?}: expected it open and silent",
            self.ended
        );
    }

    /// Reads until the stream ends (at most `limit`), returning how.
    pub async fn wait_end(&mut self, limit: Duration) -> Option<End> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.ended.is_none() {
            self.pending.clear();
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            let _ = self
                .next_event_within(deadline - tokio::time::Instant::now())
                .await;
        }
        self.ended.as_ref().map(|e| match e {
            End::Clean => End::Clean,
            End::Error => End::Error,
        })
    }

    /// Heartbeat comments seen so far.
    pub fn comments_seen(&self) -> u64 {
        self.parser.comments_seen()
    }
}
