//! How the embedded store's writer thread answers a group of writes with **one**
//! cross-thread wake-up instead of one per write.
//!
//! Each write waits on a [`Wait`] for the [`Ack`] the writer thread fills in. Waking a
//! task from outside its runtime is a system call (an `eventfd` write to the runtime's
//! driver) on a runtime whose thread is busy or parked; waking it from a task of the
//! runtime only queues it. So after a commit the writer fills in every answer, wakes
//! the first waiter itself, and leaves the others' wake-ups in [`Acks`]: the first
//! waiter to finish (or to be dropped) wakes them from its runtime's thread.
//!
//! If no waiter runs to do it (its runtime is not being driven, say), the writer wakes
//! the rest itself after [`Acks::STRAGGLERS`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;

/// The wake-ups of waiters whose answer is in, left for a waiter to deliver. A
/// blocking mutex: held only to push or take the list.
#[derive(Default)]
pub(crate) struct Acks(Mutex<Vec<Waker>>);

impl Acks {
    /// How long the writer leaves wake-ups to the waiters before delivering them.
    pub(crate) const STRAGGLERS: Duration = Duration::from_millis(10);

    /// Wakes the waiters of one group: the first from this thread, the others through
    /// whichever waiter finishes first. Wake-ups an earlier group left and no waiter
    /// delivered yet are delivered now: a waiter that does not run delays the others by
    /// one group at most (or by [`Acks::STRAGGLERS`] when no group follows).
    pub(crate) fn wake(&self, wakers: Vec<Waker>) {
        let mut wakers = wakers.into_iter();
        let first = wakers.next();
        let late = std::mem::replace(&mut *self.0.lock(), wakers.collect());
        for w in late.into_iter().chain(first) {
            w.wake();
        }
    }

    /// Whether wake-ups are waiting for delivery.
    pub(crate) fn pending(&self) -> bool {
        !self.0.lock().is_empty()
    }

    /// Delivers the wake-ups left.
    pub(crate) fn deliver(&self) {
        let wakers = std::mem::take(&mut *self.0.lock());
        for w in wakers {
            w.wake();
        }
    }
}

/// What an [`Ack`] and its [`Wait`] share: the answer once given, the waiter's waker
/// while it waits. A blocking mutex: held for a few field moves, never across a wake.
struct Slot<T> {
    answer: Option<T>,
    waker: Option<Waker>,
    /// The writer dropped the [`Ack`] without answering (the store closed).
    abandoned: bool,
}

/// A new answer slot: the writer's end and the waiter's end.
pub(crate) fn slot<T>(acks: &Arc<Acks>) -> (Ack<T>, Wait<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        answer: None,
        waker: None,
        abandoned: false,
    }));
    (
        Ack(Some(slot.clone())),
        Wait {
            slot,
            acks: acks.clone(),
        },
    )
}

/// The writer's end of an answer slot.
pub(crate) struct Ack<T>(Option<Arc<Mutex<Slot<T>>>>);

impl<T> Ack<T> {
    /// Gives the answer; returns the waker to wake, if the waiter is waiting.
    pub(crate) fn answer(mut self, answer: T) -> Option<Waker> {
        let slot = self.0.take()?;
        let mut s = slot.lock();
        s.answer = Some(answer);
        s.waker.take()
    }
}

impl<T> Drop for Ack<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            let waker = {
                let mut s = slot.lock();
                s.abandoned = true;
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// The waiter's end: resolves to the answer, or `None` if the writer gave none.
pub(crate) struct Wait<T> {
    slot: Arc<Mutex<Slot<T>>>,
    acks: Arc<Acks>,
}

impl<T> Future for Wait<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.slot.lock();
        if let Some(answer) = s.answer.take() {
            return Poll::Ready(Some(answer));
        }
        if s.abandoned {
            return Poll::Ready(None);
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Wait<T> {
    fn drop(&mut self) {
        // Done waiting (answered, or given up): pass the wake-ups on.
        self.acks.deliver();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_waiter_to_finish_wakes_the_others_of_its_group() {
        let acks = Arc::new(Acks::default());
        let (slots, waits): (Vec<_>, Vec<_>) = (0..8).map(|_| slot::<u32>(&acks)).unzip();
        let tasks: Vec<_> = waits.into_iter().map(tokio::spawn).collect();
        tokio::task::yield_now().await; // every waiter registers its waker
        let acks2 = acks.clone();
        std::thread::spawn(move || {
            let wakers = slots
                .into_iter()
                .enumerate()
                .filter_map(|(i, a)| a.answer(u32::try_from(i).unwrap()))
                .collect();
            acks2.wake(wakers);
        })
        .join()
        .unwrap();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Some(u32::try_from(i).unwrap()));
        }
        assert!(!acks.pending());
    }

    #[tokio::test]
    async fn an_answer_given_before_the_first_poll_is_ready_and_a_dropped_ack_is_none() {
        let acks = Arc::new(Acks::default());
        let (ack, wait) = slot::<u32>(&acks);
        assert!(ack.answer(7).is_none(), "nobody waits yet");
        assert_eq!(wait.await, Some(7));
        let (ack, wait) = slot::<u32>(&acks);
        let task = tokio::spawn(wait);
        tokio::task::yield_now().await;
        drop(ack);
        assert_eq!(task.await.unwrap(), None);
    }

    #[test]
    fn the_writer_wakes_the_first_waiter_and_delivers_the_rest_if_no_waiter_does() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let woken = || count.0.load(Ordering::Relaxed);
        let acks = Acks::default();
        acks.wake(vec![Waker::from(count.clone()); 3]);
        assert_eq!(woken(), 1, "the first, directly");
        assert!(acks.pending());
        acks.deliver();
        assert_eq!(woken(), 3, "the others, when no waiter delivered them");
        assert!(!acks.pending());
        // A group whose followers no waiter delivered: the next group delivers them.
        acks.wake(vec![Waker::from(count.clone()); 3]);
        acks.wake(vec![Waker::from(count.clone()); 2]);
        assert_eq!(woken(), 3 + 1 + 2 + 1);
        assert!(
            acks.pending(),
            "the second group's follower waits for its waiter"
        );
    }
}
