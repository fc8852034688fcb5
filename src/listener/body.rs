//! A request body that must have arrived in full by a deadline, so that a client dribbling its
//! body cannot hold a request (and its connection) open for ever.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a body yields once its deadline has passed; handlers answer it with 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// Whether `error`, or an error it wraps (axum's rejections and multipart errors wrap the
/// body's), is a [`BodyTimedOut`].
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Wraps a body: data already received is handed on; once `deadline` has passed, waiting for
/// more fails with [`BodyTimedOut`] and sets `expired`.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Instant,
    /// Started on the first wait only: most bodies are complete (or empty) by then.
    sleep: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, deadline: Instant, expired: Arc<AtomicBool>) -> Self {
        Self { inner, deadline, sleep: None, expired }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.expired.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_body_still_arriving_at_the_deadline_fails() {
        let part = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"part"))]);
        let dribbling = axum::body::Body::from_stream(part.chain(futures::stream::pending()));
        let expired = Arc::new(AtomicBool::new(false));
        let body = DeadlineBody::new(dribbling, Instant::now() + Duration::from_millis(50), expired.clone());
        let mut body = std::pin::pin!(body);
        let first = poll_fn(|cx| body.as_mut().poll_frame(cx)).await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "part");
        assert!(!expired.load(Ordering::Relaxed));
        let error = poll_fn(|cx| body.as_mut().poll_frame(cx)).await.unwrap().unwrap_err();
        assert!(timed_out(&*error), "{error}");
        assert!(expired.load(Ordering::Relaxed));
    }
}
