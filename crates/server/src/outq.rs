//! A connection's outbound queue: bounded, many senders (the hub, the
//! connection's reader), one receiver (its writer).
//!
//! Not tokio's `mpsc`: that channel allocates its state cache-line padded
//! (384 bytes, 128-aligned) and a first block of 32 slots for every
//! connection, ~700 bytes that an idle connection holds for nothing. This one
//! is a mutex around a `VecDeque`, ~130 bytes, whose buffer is released
//! whenever the writer has drained it (so an idle connection holds none; a
//! busy one allocates once per batch, where the boxed messages of the tokio
//! channel allocated once per message). Senders that must wait for room (a
//! connection's own replies) wait on a `Notify`, only then.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::Notify;

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Room was made (for senders waiting for it).
    room: Notify,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// Live [`Sender`]s; at 0 the receiver ends once the queue is empty.
    senders: usize,
    receiver_alive: bool,
    /// The receiver, waiting for an item.
    waiting: Option<Waker>,
}

/// The sending side (cloneable).
pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The receiving side.
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

/// A queue holding at most `capacity` items (at least 1).
pub(crate) fn queue<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            receiver_alive: true,
            waiting: None,
        }),
        room: Notify::new(),
        capacity: capacity.max(1),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding it; a poisoned lock's data is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Sender<T> {
    /// Queues `item` if there is room.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.0.lock();
        if !state.receiver_alive {
            return Err(TrySendError::Closed(item));
        }
        if state.items.len() >= self.0.capacity {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        let waiting = state.waiting.take();
        drop(state);
        if let Some(w) = waiting {
            w.wake();
        }
        Ok(())
    }

    /// Queues `item`, waiting for room; false if the receiver is gone.
    pub(crate) async fn send(&self, mut item: T) -> bool {
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            // Registered before trying, so room made in between is not missed.
            room.as_mut().enable();
            match self.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Closed(_)) => return false,
                Err(TrySendError::Full(back)) => item = back,
            }
            room.await;
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        let waiting = if state.senders == 0 {
            state.waiting.take()
        } else {
            None
        };
        drop(state);
        if let Some(w) = waiting {
            w.wake();
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone and the queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut state = self.0.lock();
            match self.pop(&mut state) {
                Ok(item) => Poll::Ready(Some(item)),
                Err(TryRecvError::Disconnected) => Poll::Ready(None),
                Err(TryRecvError::Empty) => {
                    match &mut state.waiting {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        slot => *slot = Some(cx.waker().clone()),
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The next item if one is queued.
    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut state = self.0.lock();
        self.pop(&mut state)
    }

    fn pop(&self, state: &mut State<T>) -> Result<T, TryRecvError> {
        match state.items.pop_front() {
            Some(item) => {
                if state.items.len() + 1 >= self.0.capacity {
                    // It was full: senders may be waiting for room.
                    self.0.room.notify_waiters();
                }
                if state.items.is_empty() {
                    // Drained: an idle connection keeps no buffer.
                    state.items = VecDeque::new();
                }
                Ok(item)
            }
            None if state.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_alive = false;
        // What is queued goes now, not when the last sender does.
        let items = std::mem::take(&mut state.items);
        drop(state);
        drop(items);
        self.0.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn bounded_fifo_that_ends_with_its_senders() {
        let (tx, mut rx) = queue(2);
        tx.try_send(1).unwrap();
        let tx2 = tx.clone();
        tx2.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.recv().await, Some(1));
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        tx2.try_send(4).unwrap();
        drop(tx2);
        assert_eq!(rx.recv().await, Some(4), "what was queued is still read");
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_in_when_room_is_made_and_order_holds() {
        let (tx, mut rx) = queue(1);
        tx.try_send(0).unwrap();
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(1).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no room yet");
        assert_eq!(rx.recv().await, Some(0));
        assert!(waiting.await.unwrap());
        assert_eq!(rx.recv().await, Some(1));
    }

    #[tokio::test]
    async fn the_receiver_is_woken_and_senders_see_it_gone() {
        let (tx, mut rx) = queue::<u32>(4);
        let reader = tokio::spawn(async move { (rx.recv().await, rx) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(7).unwrap();
        let (got, rx) = reader.await.unwrap();
        assert_eq!(got, Some(7));
        drop(rx);
        assert!(matches!(tx.try_send(8), Err(TrySendError::Closed(8))));
        assert!(!tx.send(9).await);
    }

    #[tokio::test]
    async fn a_drained_queue_holds_no_buffer() {
        let (tx, mut rx) = queue(8);
        for i in 0..5 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert_eq!(rx.0.lock().items.capacity(), 0);
    }
}
