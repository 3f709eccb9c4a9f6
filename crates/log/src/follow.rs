//! Following the topic from two sources at once: a consumer group's stream,
//! and this process's own appends as the broker acknowledges them
//! ([`crate::Producer::with_acked`]), which arrive earlier.

use tokio::sync::mpsc;

use crate::{ConsumerEvent, LogRecord};

/// Where a follower got a record: from the log's stream, or from this
/// process's producer as the broker acknowledged it
/// ([`crate::Producer::with_acked`]). A follower taking both folds each
/// offset once, in log order, by taking a record only when it is [`Self::due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Stream,
    Acked,
}

impl Origin {
    /// Whether a record at `offset` is the one to take when everything
    /// before `next` has been taken. The stream is in log order and may skip
    /// offsets (records it will never deliver); an acknowledged record is
    /// due only at exactly `next`: a gap means another process wrote in
    /// between, and the stream brings that first.
    pub fn due(self, next: i64, offset: i64) -> bool {
        match self {
            Origin::Stream => offset >= next,
            Origin::Acked => offset == next,
        }
    }
}

/// What a follower receives next.
pub enum Input {
    /// From the consumer group's stream (records, assignments, revocations).
    Stream(ConsumerEvent),
    /// A record this process appended, acknowledged, maybe not fetched yet.
    Acked(LogRecord),
}

/// A consumer group's stream, bounded or not.
pub trait EventSource: Send {
    fn recv(&mut self) -> impl std::future::Future<Output = Option<ConsumerEvent>> + Send;
    fn try_recv(&mut self) -> Option<ConsumerEvent>;
}

impl EventSource for mpsc::Receiver<ConsumerEvent> {
    async fn recv(&mut self) -> Option<ConsumerEvent> {
        mpsc::Receiver::recv(self).await
    }
    fn try_recv(&mut self) -> Option<ConsumerEvent> {
        mpsc::Receiver::try_recv(self).ok()
    }
}

impl EventSource for mpsc::UnboundedReceiver<ConsumerEvent> {
    async fn recv(&mut self) -> Option<ConsumerEvent> {
        mpsc::UnboundedReceiver::recv(self).await
    }
    fn try_recv(&mut self) -> Option<ConsumerEvent> {
        mpsc::UnboundedReceiver::try_recv(self).ok()
    }
}

/// The stream and the acknowledged records, the latter first: they are the
/// earlier copy. The stream is not starved by this: acknowledgements come in
/// bursts, one per broker round trip, and are drained far faster.
pub struct Inputs<E> {
    events: E,
    acked: Option<mpsc::UnboundedReceiver<LogRecord>>,
}

impl<E: EventSource> Inputs<E> {
    pub fn new(events: E, acked: Option<mpsc::UnboundedReceiver<LogRecord>>) -> Self {
        Self { events, acked }
    }

    /// The next input; None when the stream ends.
    pub async fn recv(&mut self) -> Option<Input> {
        loop {
            let Some(acked) = &mut self.acked else {
                return self.events.recv().await.map(Input::Stream);
            };
            tokio::select! {
                biased;
                r = acked.recv() => match r {
                    Some(r) => return Some(Input::Acked(r)),
                    None => self.acked = None,
                },
                ev = self.events.recv() => return ev.map(Input::Stream),
            }
        }
    }

    /// An input that is already waiting, if any.
    pub fn try_recv(&mut self) -> Option<Input> {
        if let Some(r) = self.acked.as_mut().and_then(|a| a.try_recv().ok()) {
            return Some(Input::Acked(r));
        }
        self.events.try_recv().map(Input::Stream)
    }
}
